"""Options at their limits: one clear line naming the option, before any work (issue 25, item 4).

Property-based where the inputs form a family (memory sizes, whole-number sizes, worker counts,
addresses); servers that are not dask schedulers are started on 127.0.0.1 only, and every wait
is bounded by a shortened ``CONNECT_TIMEOUT``.
"""

from __future__ import annotations

import math
import resource
import socket
import string
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_unet
from fixed_examples import FIXED_EXAMPLES, HANG_GUARD_S
from napari_unet.cli import main
from napari_unet.core.memory import (
    MEMORY_UNITS,
    parse_memory,
    process_rss_bytes,
    total_ram_bytes,
)
from napari_unet.core.predict import distributed as cluster
from napari_unet.core.predict.blocks import MIN_BLOCK_EDGE
from napari_unet.core.predict.predictor import Predictor
from tiny_models import make_model

SAMPLE = Path(napari_unet.__file__).parent / "samples" / "nuclei.tif"
NO_MODEL = "/nonexistent/napari-unet-model"
"""A model that cannot load: an option refused first proves nothing was loaded."""
QUICK = settings(FIXED_EXAMPLES, max_examples=40)
FEW = settings(QUICK, max_examples=12)
SHORT_TIMEOUT = 2.0
"""Seconds CONNECT_TIMEOUT is shortened to; the documented default is 10."""
ANSWER_GUARD_S = SHORT_TIMEOUT + 1.5
"""Seconds a refused address may take: the documented timeout, plus one for the thread that
asks the server (``_identify``) and a margin for a loaded machine. A guard, not a timing."""


def one_line(error: BaseException, *names: str) -> str:
    """The error's message, checked to be one short line naming each of ``names``."""
    text = str(error)
    assert "\n" not in text and len(text) < 300, text
    for name in names:
        assert name in text, (name, text)
    return text


# -- memory sizes ---------------------------------------------------------------------------------


@QUICK
@given(
    number=st.one_of(st.integers(1, 10**6).map(str), st.decimals(1, 10**4, places=2).map(str)),
    unit=st.sampled_from(sorted(MEMORY_UNITS)),
    suffix=st.sampled_from(["", "B", "iB"]),
    upper=st.booleans(),
    space=st.sampled_from(["", " "]),
)
def test_memory_sizes_people_write_are_read_in_binary_units(number, unit, suffix, upper, space):
    suffix = suffix if unit else suffix.replace("iB", "B")
    text = f" {number}{space}{unit}{suffix} "
    text = text.upper() if upper else text.lower()
    expected = int(float(number) * 1024 ** "_KMGTP".index(unit or "_"))
    assert parse_memory(text) == expected


NOT_A_SIZE = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e999", "", "   ", "GB", "2XB", "-1GB", "0", "0.5"]),
    st.sampled_from(["1e-4KB", "GiB2", "2 G G", "Infinity", "--2G", "2GBB"]),
    st.text(alphabet=string.ascii_letters + " .-+_", max_size=8),
    st.floats().filter(lambda x: not (math.isfinite(x) and x >= 1)),
    st.integers(max_value=0),
    st.integers(min_value=10**400, max_value=10**401),
    st.booleans(),
    st.none(),
    st.lists(st.integers(1, 9), max_size=2),
)


@QUICK
@given(bad=NOT_A_SIZE)
def test_what_is_not_a_finite_positive_size_is_refused_naming_the_option(bad):
    with pytest.raises(ValueError) as refused:
        parse_memory(bad)
    one_line(refused.value, "memory_limit/--memory")


@FEW
@given(bad=NOT_A_SIZE.filter(lambda size: size is not None))  # None: the default limit
def test_a_bad_memory_size_is_refused_before_the_model_loads(bad):
    with pytest.raises(ValueError, match="memory_limit/--memory"):
        Predictor(NO_MODEL, memory_limit=bad)


def test_more_memory_than_the_machine_has_is_clamped_with_a_warning():
    total = total_ram_bytes()
    assert total is not None  # Linux CI: /proc/meminfo
    with pytest.warns(RuntimeWarning, match="memory_limit/--memory .* more than this machine"):
        predictor = Predictor(make_model(), memory_limit=f"{1000 * total / 2**30:.0f}GB")
    assert process_rss_bytes() < predictor.memory_limit <= 1.05 * total


def test_a_limit_below_what_the_process_holds_is_refused_before_any_prediction():
    limit = process_rss_bytes() + 2**20
    with pytest.raises(ValueError) as refused:
        Predictor(make_model(), memory_limit=limit)
    one_line(refused.value, "memory_limit/--memory", "already holds")


# -- tile, overlap, block, halo and batch sizes ---------------------------------------------------

SIZE_OPTIONS = {
    "tile_shape": ("tile_shape/--tile", 1),
    "overlap": ("overlap/--overlap", 0),
    "block_shape": ("block_shape/--block", 1),
    "halo": ("halo", 0),
    "batch_size": ("batch_size/--batch-size", 1),
}
NOT_A_WHOLE_NUMBER = st.one_of(
    st.floats().filter(lambda x: not (math.isfinite(x) and x == int(x))),
    st.booleans(),
    st.text(max_size=4),
    st.sampled_from([np.float32(2.5), np.bool_(True), b"16", object(), np.array(5.5)]),
)


@QUICK
@given(option=st.sampled_from(sorted(SIZE_OPTIONS)), bad=NOT_A_WHOLE_NUMBER)
def test_sizes_that_are_not_whole_numbers_are_refused_before_the_model_loads(option, bad):
    name, _ = SIZE_OPTIONS[option]
    for value in (bad, [bad, 16, 16]):  # alone and as one axis of several
        with pytest.raises(ValueError) as refused:
            Predictor(NO_MODEL, **{option: value})
        one_line(refused.value, name)


@QUICK
@given(option=st.sampled_from(sorted(SIZE_OPTIONS)), offset=st.integers(1, 10**12))
def test_sizes_below_their_minimum_are_refused_naming_it(option, offset):
    name, minimum = SIZE_OPTIONS[option]
    with pytest.raises(ValueError) as refused:
        Predictor(NO_MODEL, **{option: minimum - offset})
    one_line(refused.value, name, f"at least {minimum}")


@QUICK
@given(
    option=st.sampled_from(["tile_shape", "overlap", "block_shape", "halo"]),
    count=st.integers(0, 6),
)
def test_too_many_or_too_few_axes_are_refused_naming_the_count(option, count):
    name, _ = SIZE_OPTIONS[option]
    axes = 2 if option in ("tile_shape", "overlap") else 3  # a 2D model; blocks are (Z, Y, X)
    if count == axes:
        return
    with pytest.raises(ValueError) as refused:
        Predictor(make_model(), **{option: (64,) * count})
    one_line(refused.value, name, f"one number or {axes}", f"got {count}")


@FEW
@given(
    option=st.sampled_from(sorted(SIZE_OPTIONS)),
    size=st.one_of(st.integers(10**4, 10**30), st.sampled_from([1e9, 2.0**40])),
)
def test_sizes_beyond_the_image_mean_the_whole_image(option, size):
    image = np.random.default_rng(1).normal(size=(40, 56)).astype(np.float32)
    model = make_model(output_kind="instances")
    whole = Predictor(model, precision="fp32").predict(image, output="instances")
    start = time.perf_counter()
    labels = Predictor(model, precision="fp32", **{option: size}).predict(image, output="instances")
    assert time.perf_counter() - start < HANG_GUARD_S
    np.testing.assert_array_equal(labels, whole)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_a_tile_below_the_networks_smallest_input_is_refused_and_that_input_works(padding):
    model = make_model(padding=padding)
    smallest = model.network.valid_input_size(1)
    for tile in range(1, smallest):
        with pytest.raises(ValueError) as refused:
            Predictor(model, tile_shape=tile)
        one_line(refused.value, "tile_shape/--tile", f"({smallest} pixels a side)")
    image = np.random.default_rng(2).normal(size=(3 * smallest, 2 * smallest)).astype(np.float32)
    assert Predictor(model, tile_shape=smallest).predict(image).shape == image.shape


@QUICK
@given(edge=st.integers(1, MIN_BLOCK_EDGE - 1), axis=st.sampled_from([1, 2]))
def test_blocks_under_the_smallest_edge_are_refused_before_the_model_loads(edge, axis):
    block = [4, 64, 64]
    block[axis] = edge
    with pytest.raises(ValueError) as refused:
        Predictor(NO_MODEL, block_shape=block)
    one_line(refused.value, "block_shape/--block", f"at least {MIN_BLOCK_EDGE} pixels")


def test_objects_joined_across_z_need_blocks_as_deep_as_the_seam_slab():
    stack = np.random.default_rng(3).random((4, 48, 48)).astype(np.float32)
    model = make_model(output_kind="instances")
    with pytest.raises(ValueError) as refused:
        Predictor(model, block_shape=(1, 48, 48)).predict(stack, axes="ZYX", output="instances")
    one_line(refused.value, "block_shape/--block", "at least 2 slices")
    labels = Predictor(model, block_shape=(2, 48, 48)).predict(
        stack, axes="ZYX", output="instances"
    )
    assert labels.shape == stack.shape
    semantic = Predictor(model, block_shape=(1, 48, 48)).predict(stack, "ZYX", "semantic")
    assert semantic.shape == stack.shape  # per-pixel outputs join nothing: one slice is fine


class Untouchable:
    """A million by a million pixel image whose pixels must never be read."""

    shape, dtype, ndim = (10**6, 10**6), np.dtype(np.float32), 2

    def __getitem__(self, key: object) -> np.ndarray:
        raise AssertionError(f"pixels read at {key}")


@pytest.mark.parametrize("spare", [None, 2**30])
def test_a_block_too_large_for_the_memory_is_refused_before_any_pixel_is_read(spare):
    limit = None if spare is None else process_rss_bytes() + spare  # what this process holds varies
    predictor = Predictor("nuclei", block_shape=(1, 10**6, 10**6), memory_limit=limit)
    start = time.perf_counter()
    with pytest.raises(ValueError) as refused:
        predictor.request(Untouchable(), "YX")
    source = "the free memory" if limit is None else "memory_limit/--memory"
    text = one_line(refused.value, "block_shape/--block", source)
    needed = parse_memory(text.split("needs at least ")[1].split(" for ")[0])
    assert needed >= 10**12 * 100  # at least 100 bytes per pixel of maps
    assert time.perf_counter() - start < HANG_GUARD_S


# -- worker counts --------------------------------------------------------------------------------


@QUICK
@given(bad=st.one_of(st.integers(max_value=0), st.booleans(), st.floats(), st.text(max_size=3)))
def test_worker_counts_that_are_not_at_least_one_process_are_refused(bad):
    with pytest.raises(ValueError) as refused:
        cluster.check_workers(bad)
    one_line(refused.value, "workers/--workers")


@QUICK
@given(workers=st.integers(1, 10_000))
def test_worker_counts_are_capped_by_the_cores_with_a_warning(workers):
    cores = cluster.usable_cores()
    cap, _ = cluster._worker_cap()  # the cores, or fewer under a tight open-file limit
    assert 1 <= cap <= cores
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cluster.check_workers(workers) == min(workers, cap)
    capped = [w for w in caught if "workers/--workers" in str(w.message)]
    assert len(capped) == (workers > cap)
    if capped and cap == cores:
        assert f"the {cores} cores" in str(capped[0].message)


@pytest.fixture
def open_file_limit():
    """Set this process's soft open-file limit for a test; the old one comes back after it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield lambda files: resource.setrlimit(resource.RLIMIT_NOFILE, (files, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_worker_counts_are_capped_by_the_open_file_limit(open_file_limit):
    spare = cluster._open_files() + cluster.FILES_KEPT_FREE + 4
    open_file_limit(spare + cluster.FILES_PER_WORKER)  # room for exactly one worker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cluster.check_workers(8) == 1
    if cluster.usable_cores() > 1:
        assert "open-file limit" in str(caught[0].message)
    open_file_limit(spare)  # no room for any worker
    with pytest.raises(ValueError) as refused:
        cluster.check_workers(2)
    one_line(refused.value, "open-file limit", "ulimit -n")


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({"workers": 0}, ["workers/--workers"]),
        ({"workers": -4}, ["workers/--workers"]),
        ({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}, ["--workers", "--scheduler"]),
    ],
)
def test_connect_refuses_bad_worker_options_before_starting_anything(arguments, names):
    start = time.perf_counter()
    with pytest.raises(ValueError) as refused:
        cluster.connect(**arguments)
    one_line(refused.value, *names)
    assert time.perf_counter() - start < HANG_GUARD_S


# -- scheduler addresses --------------------------------------------------------------------------

MALFORMED = st.one_of(
    st.sampled_from(["http://x", "tcp://host:notaport", "", "  ", "tcp://", "tcp://:8786"]),
    st.sampled_from(["host", "tcp://host", "https://127.0.0.1:8786", "file:///tmp/x"]),
    st.integers(65536, 10**6).map(lambda port: f"tcp://127.0.0.1:{port}"),
    st.integers(-(10**6), 0).map(lambda port: f"127.0.0.1:{port}"),
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=6).map(lambda p: f"tcp://h:{p}"),
    st.none().map(lambda _: 8786),
)


@QUICK
@given(address=MALFORMED)
def test_malformed_scheduler_addresses_are_refused_at_once_naming_the_address(address):
    start = time.perf_counter()
    with pytest.raises(ValueError) as refused:
        cluster.connect(address)
    text = one_line(refused.value, "scheduler/--scheduler")
    assert repr(address) in text or repr(str(address).strip()) in text
    assert time.perf_counter() - start < HANG_GUARD_S


class LocalServer:
    """A TCP server on 127.0.0.1 that is no dask scheduler: it says ``reply`` and holds on."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply, self.connections = reply, []
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.socket.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed at the end of the test
                return
            if self.reply is None:
                connection.close()
                continue
            self.connections.append(connection)
            try:
                connection.sendall(self.reply)
            except OSError:
                pass

    def close(self) -> None:
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", f"{SHORT_TIMEOUT:g}s")


def free_local_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"", "within 2s"),  # listens, says nothing
        (None, "cannot reach the dask scheduler"),  # accepts, then hangs up
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4, "not as a dask scheduler"),
        (b"\xff" * 65536, "not as a dask scheduler"),  # noise
        (b"\x00" * 8 + b"\x01" + b"\x00" * 7, "dask scheduler"),  # a frame header, then silence
    ],
)
def test_a_server_that_is_not_a_dask_scheduler_is_answered_in_time(short_timeout, reply, words):
    server = LocalServer(reply)
    try:
        start = time.perf_counter()
        with pytest.raises(ConnectionError) as refused:
            cluster.connect(server.address)
        elapsed = time.perf_counter() - start
    finally:
        server.close()
    one_line(refused.value, server.address, words)
    assert elapsed < ANSWER_GUARD_S


def test_a_port_where_nothing_listens_is_answered_in_time(short_timeout):
    address = f"tcp://127.0.0.1:{free_local_port()}"
    start = time.perf_counter()
    with pytest.raises(ConnectionError) as refused:
        cluster.connect(address)
    one_line(refused.value, address, "cannot reach the dask scheduler", "within 2s")
    assert time.perf_counter() - start < ANSWER_GUARD_S


def test_the_documented_timeout_is_ten_seconds_and_a_real_scheduler_still_connects(short_timeout):
    from dask.utils import parse_timedelta
    from distributed import LocalCluster

    assert parse_timedelta(cluster.CONNECT_TIMEOUT) == SHORT_TIMEOUT
    assert "10 seconds" in (Path(__file__).parents[1] / "docs" / "bigdata.md").read_text()
    local = LocalCluster(
        n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None
    )
    try:
        start = time.perf_counter()
        with cluster.connect(local.scheduler_address) as client:
            assert client.scheduler_info()["type"] == "Scheduler"
        assert time.perf_counter() - start < SHORT_TIMEOUT
    finally:
        local.close()


# -- the CLI shows each as one line ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ome_image(tmp_path_factory):
    """A small OME-Zarr crop of the nuclei sample: --workers and --scheduler need a store."""
    zarr = pytest.importorskip("zarr")
    writer = pytest.importorskip("ome_zarr.writer")
    from napari_unet.core.io.images import read_image

    path = tmp_path_factory.mktemp("limits") / "cells.ome.zarr"
    writer.write_image(
        read_image(SAMPLE).data[:64, :64],
        zarr.open_group(path, mode="w"),
        axes="yx",
        storage_options={"chunks": (32, 32)},
    )
    return path


@pytest.mark.parametrize(
    "option",
    [
        ["--memory", "inf"],
        ["--memory", "1e999"],
        ["--memory=-1GB"],
        ["--memory", "2XB"],
        ["--memory", ""],
        ["--memory", "GB"],
        ["--memory", "1MB"],
        ["--tile", "1"],
        ["--tile", "64,64,64"],
        ["--overlap", "-1"],
        ["--block", "8"],
        ["--block", "0"],
        ["--block", "256,256"],
        ["--batch-size", "0"],
        ["--workers", "-1"],
        ["--workers", "0"],
        ["--scheduler", ""],
        ["--scheduler", "http://x"],
        ["--scheduler", "tcp://host:notaport"],
        ["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"],
    ],
)
def test_the_cli_says_each_in_one_line_naming_the_flag_and_writes_nothing(
    ome_image, tmp_path, capsys, option
):
    target = tmp_path / "labels.ome.zarr"
    assert main(["predict", str(ome_image), "-o", str(target), "--quiet", *option]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-unet predict: error:"), lines
    flags = [part.split("=")[0] for part in option if part.startswith("--")]
    assert all(flag in lines[0] for flag in flags), lines
    assert not target.exists()
