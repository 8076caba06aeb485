"""Held-out hardening of OME-Zarr stores and outputs, many variants of each rule.

1. A store is data, not directions: paths in its metadata stay inside it, its declared
   transforms, shapes and chunks make sense before anything is read, and a level is judged by
   what the store really holds, with the store and the field named in every refusal.
3. An output never lands in, over or through an input: nowhere inside an input store but an
   image's ``labels/<name>``, never through a link, and a replaced output is swapped
   atomically with nothing left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixed_examples import FIXED_EXAMPLES, HANG_GUARD_S
from napari_unet.cli import main
from napari_unet.core.io import images as io
from napari_unet.core.io import omezarr
from napari_unet.core.io.output_checks import check_outputs

zarr = pytest.importorskip("zarr")

EXAMPLES = FIXED_EXAMPLES
PIXELS = (np.arange(64 * 80).reshape(64, 80) % 997).astype(np.uint16)


def image_store(root: Path, paths=("0",), version="0.5", scale=(0.5, 0.25)) -> Path:
    """A YX OME-Zarr image whose level ``i`` (at ``paths[i]``) is ``PIXELS[::2**i, ::2**i]``."""
    group = zarr.open_group(root, mode="w", zarr_format={"0.4": 2, "0.5": 3}[version])
    for level, path in enumerate(paths):
        data = PIXELS[:: 2**level, :: 2**level]
        group.create_array(path, shape=data.shape, chunks=(32, 32), dtype="uint16")[:] = data
    datasets = [
        {"path": p, "coordinateTransformations": [transform(scale, i)]} for i, p in enumerate(paths)
    ]
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "yx"]
    set_ome(root, {"version": version, "multiscales": [{"axes": axes, "datasets": datasets}]})
    return root


def transform(scale, level: int = 0) -> dict:
    return {"type": "scale", "scale": [s * 2**level for s in scale]}


def ome(root: Path) -> dict:
    if (root / "zarr.json").is_file():
        return json.loads((root / "zarr.json").read_text())["attributes"]["ome"]
    return json.loads((root / ".zattrs").read_text())


def set_ome(root: Path, attributes: dict) -> None:
    """Write the OME attributes as given (NaN and all): hostile metadata, written by hand."""
    if (root / "zarr.json").is_file():
        metadata = json.loads((root / "zarr.json").read_text())
        metadata["attributes"] = {"ome": attributes}
        (root / "zarr.json").write_text(json.dumps(metadata))
    else:
        (root / ".zattrs").write_text(json.dumps(attributes))


def with_dataset(root: Path, **fields) -> None:
    attributes = ome(root)
    attributes["multiscales"][0]["datasets"][0].update(fields)
    set_ome(root, attributes)


def digest(root: Path) -> str:
    """Every file under ``root``, names and bytes: proof an input was not touched."""
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return sha.hexdigest()


@pytest.fixture
def store(tmp_path) -> Path:
    return image_store(tmp_path / "img.ome.zarr")


@pytest.fixture(params=["0.4", "0.5"])
def any_store(request, tmp_path) -> Path:
    """The image in NGFF 0.4 (zarr format 2) and 0.5 (zarr format 3)."""
    return image_store(tmp_path / "img.ome.zarr", version=request.param)


@pytest.fixture
def decoy(tmp_path) -> Path:
    """A readable zarr array outside every store: metadata must never lead here."""
    zarr.create_array(tmp_path / "outside", shape=(64, 80), dtype="uint16")[:] = 7
    return tmp_path / "outside"


# 1. A store is data, not directions ------------------------------------------------------

SEGMENTS = st.sampled_from(["0", "s0.zarr", "..", ".", "", "labels", "outside", "~", "a b"])
PREFIXES = st.sampled_from(["", "", "", "/", "http://host/", "s3://bucket/", "file:///", "C:\\"])


@EXAMPLES
@given(prefix=PREFIXES, segments=st.lists(SEGMENTS, min_size=1, max_size=4))
def test_a_dataset_path_opens_only_inside_its_store(any_store, decoy, prefix, segments):
    store = any_store
    path = prefix + "/".join(segments)
    with_dataset(store, path=path)
    safe = prefix == "" and not {"..", ".", ""} & set(segments)
    field = "multiscales[0].datasets[0]"
    if safe and path == "0":
        assert io.read_image(store).data[5, 7] == PIXELS[5, 7]
        return
    with pytest.raises(ValueError) as refusal:
        io.read_image(store)
    message = str(refusal.value)
    assert str(store) in message and field in message
    assert ("must name a place inside" in message) is not safe  # else: no such array there


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_links_that_leave_the_store_are_refused_links_inside_it_are_read(tmp_path, decoy, version):
    root = image_store(tmp_path / "img.ome.zarr", ("real",), version)
    os.symlink(root / "real", root / "0")  # inside the store: fine
    with_dataset(root, path="0")
    assert io.read_image(root).data[3, 4] == PIXELS[3, 4]
    os.symlink(decoy, root / "1")  # a level that is someone else's array
    with_dataset(root, path="1")
    with pytest.raises(ValueError, match=r"multiscales\[0\]\.datasets\[0\]\.path .*link"):
        io.read_image(root)
    with_dataset(root, path="real")
    with pytest.raises(ValueError, match="the link 1 leads out of the store"):  # even unused
        io.read_image(root)
    (root / "1").unlink()
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(ValueError, match=r"the link loop leads out of the store .* or loops"):
        io.read_image(root)
    with_dataset(root, path="loop")
    with pytest.raises(ValueError, match=r"datasets\[0\]\.path is 'loop'.*loops"):
        io.read_image(root)
    (root / "loop").unlink()
    with_dataset(root, path="real")
    chunk = next(p for p in (root / "real").rglob("*") if p.is_file() and "zarr" not in p.name)
    chunk.unlink()
    os.symlink("/etc/hostname", chunk)  # one chunk file read from outside
    with pytest.raises(ValueError, match=r"the link real/.* leads out of the store"):
        io.read_image(root)


LABEL_NAMES = st.sampled_from(["cells", "../../outside", "/tmp", "a/b", "", ".", "..", "x:y", 3])


@EXAMPLES
@given(names=st.lists(LABEL_NAMES, min_size=1, max_size=3, unique_by=str))
def test_label_names_are_one_name_inside_the_labels_group(store, names):
    io.write_labels(store / "labels" / "cells", PIXELS > 500, "YX", overwrite=True)
    group = store / "labels"
    metadata = json.loads((group / "zarr.json").read_text())
    metadata["attributes"]["ome"]["labels"] = names
    (group / "zarr.json").write_text(json.dumps(metadata))
    bad = [n for n in names if not (isinstance(n, str) and n.isidentifier())]
    if not bad:
        assert omezarr.label_images(store) == [group / "cells"] * names.count("cells")
        return
    with pytest.raises(ValueError, match=rf"{group}: labels\[{names.index(bad[0])}\]"):
        omezarr.label_images(store)


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 10**400),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


def sensible(values, positive: bool) -> bool:
    def good(v):
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return float(v) < float("inf") and v == v and (v > 0 or not positive)

    try:
        return isinstance(values, list) and len(values) == 2 and all(good(v) for v in values)
    except OverflowError:
        return False


@EXAMPLES
@given(values=st.one_of(st.lists(NUMBERS, max_size=4), NUMBERS), kind=st.sampled_from(["s", "t"]))
def test_transforms_are_finite_one_per_axis_and_scales_positive(store, values, kind):
    key = {"s": "scale", "t": "translation"}[kind]
    transforms = [{"type": "scale", "scale": [0.5, 0.25]}]
    if key == "scale":
        transforms = [{"type": "scale", "scale": values}]
    else:
        transforms.append({"type": "translation", "translation": values})
    with_dataset(store, coordinateTransformations=transforms)
    if sensible(values, positive=key == "scale"):
        expected = values if key == "scale" else [0.5, 0.25]
        sizes = io.read_image(store).pixel_size_um
        assert sizes == pytest.approx({"Y": float(expected[0]), "X": float(expected[1])})
        return
    index = 0 if key == "scale" else 1
    field = rf"multiscales\[0\]\.datasets\[0\]\.coordinateTransformations\[{index}\]\.{key}"
    with pytest.raises(ValueError, match=rf"{store}: {field} is .* 2 .*one per axis"):
        io.read_image(store)


@pytest.mark.parametrize(
    "transform",
    [
        {"type": "scale", "path": "../../outside/scale.bin"},
        {"type": "scale", "scale": [1, 1], "path": "http://host/scale"},
        {"type": "affine", "affine": [[1, 0, 0], [0, 1, 0]]},
        {"scale": [1, 1]},
        "scale",
    ],
)
def test_transforms_from_elsewhere_or_of_unknown_kinds_are_refused(store, transform):
    with_dataset(store, coordinateTransformations=[transform])
    with pytest.raises(ValueError, match=r"coordinateTransformations\[0\] must be a scale"):
        io.read_image(store)


def declare_array(folder: Path, shape, chunks, dtype="uint16") -> None:
    """An array's metadata only: what it declares, no chunk written."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
    }
    (folder / "zarr.json").write_text(json.dumps(metadata))


SIDES = st.one_of(st.integers(-2, 3), st.integers(1, 2**40), st.sampled_from([2**24, 2**31]))


@EXAMPLES
@given(
    shape=st.lists(SIDES, min_size=2, max_size=2),
    chunks=st.lists(st.one_of(st.integers(-1, 4), st.integers(1, 2**20)), min_size=2, max_size=2),
)
def test_declared_shapes_and_chunks_are_checked_before_anything_is_read(store, shape, chunks):
    declare_array(store / "big", shape, chunks)
    with_dataset(store, path="big")
    pixels = int(np.prod(shape, dtype=object))
    fine = min(shape) >= 1 and min(chunks) >= 1 and np.prod(chunks, dtype=object) * 2 <= 2**30
    tracemalloc.start()
    started = time.perf_counter()
    try:
        if fine and pixels <= omezarr.SPARSE_CHECK_PIXELS:  # small enough to hold no chunk
            assert io.read_image(store).data[0, 0] == 0  # the fill value: read, not allocated
        else:
            with pytest.raises(ValueError, match=rf"{store}.*multiscales\[0\]\.datasets\[0\]"):
                io.read_image(store)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20 and time.perf_counter() - started < HANG_GUARD_S, (peak, shape, chunks)


@pytest.mark.parametrize(
    ("shards", "held", "message"),
    [
        (None, 5, r"declares 2147483648 pixels in 512 chunk files .* holds 5 of"),
        (None, 6, None),
        ((4096, 4096), 1, r"in 128 chunk files \(chunks, or shards\) but the store holds 1 of"),
        ((4096, 4096), 2, None),
    ],
)
def test_a_big_level_must_hold_at_least_one_chunk_file_in_a_hundred(
    tmp_path, shards, held, message
):
    """2**31 pixels in 512 chunks of 2048x2048, or 128 shards of 4096x4096 (1 % is 1.28)."""
    root = image_store(tmp_path / "img.ome.zarr")
    side = 2048 if shards is None else 4096
    chunks = (2048, 2048) if shards is None else (1024, 1024)
    level = zarr.create_array(
        root / "big", shape=(2**16, 2**15), chunks=chunks, shards=shards, dtype="u1"
    )
    for i in range(held):
        level[i * side : (i + 1) * side, :side] = 1
    with_dataset(root, path="big")
    if message:
        with pytest.raises(ValueError, match=message):
            io.read_image(root)
    else:
        assert io.read_image(root).data[side * held - 1, side - 1] == 1


def test_a_level_larger_than_the_finer_one_is_refused(tmp_path):
    root = image_store(tmp_path / "img.ome.zarr", ("0", "1"))
    declare_array(root / "1", (2**20, 80), (1024, 80))  # would drive a pyramid of labels
    with pytest.raises(ValueError, match=r"datasets\[1\].*larger than the finer level's"):
        io.read_image(root)


@pytest.mark.parametrize("count", [0, 65, 20_000])
def test_a_pyramid_of_no_or_absurdly_many_levels_is_refused_before_any_is_opened(store, count):
    attributes = ome(store)
    attributes["multiscales"][0]["datasets"] *= count
    set_ome(store, attributes)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=rf"datasets lists {count} levels \(1 to 64"):
        io.read_image(store)
    assert time.perf_counter() - started < HANG_GUARD_S


def test_oversized_or_deeply_nested_metadata_is_refused_unparsed(store, monkeypatch):
    (store / "0" / "zarr.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        io.read_image(store)
    monkeypatch.setattr(omezarr, "MAX_METADATA_BYTES", 1000)
    set_ome(store, {**ome(store), "padding": "x" * 2000})
    with pytest.raises(ValueError, match="zarr metadata over 1000 bytes is refused"):
        io.read_image(store)


# 3. An output never lands in, over or through an input -----------------------------------

PLACES = st.sampled_from(["s0.zarr", "s1", "labels", "cells", "x.tif", "..", ".", "img.ome.zarr"])


def normal(parts: list[str]) -> list[str] | None:
    """The parts of ``img.ome.zarr/<parts>`` inside the image, ``.`` and ``..`` applied.

    None when the path ends outside the image (``../img.ome.zarr/s1`` is inside).
    """
    out: list[str] = []
    for part in ["img.ome.zarr", *parts]:
        if part == "..":
            if not out:
                return None
            out.pop()
        elif part != ".":
            out.append(part)
    return out[1:] if out[:1] == ["img.ome.zarr"] else None


@pytest.fixture
def s0_image(tmp_path) -> Path:
    """An image whose level 0 lives at ``s0.zarr``, legal in NGFF and once lost to an output."""
    return image_store(tmp_path / "img.ome.zarr", ("s0.zarr", "s1"))


@EXAMPLES
@given(parts=st.lists(PLACES, min_size=1, max_size=3))
def test_no_output_lands_inside_an_input_store_but_its_labels(s0_image, parts):
    inside = normal(parts)
    if inside is None:
        return  # outside the store: other rules (folders, names) apply
    before = digest(s0_image)
    output = Path(s0_image, *parts)
    is_labels = len(inside) == 2 and inside[0] == "labels"
    if is_labels:
        check_outputs([s0_image], [output], overwrite=True)
    else:
        with pytest.raises(ValueError, match=r"inside the input|would replace the input"):
            check_outputs([s0_image], [output], overwrite=True)
    assert digest(s0_image) == before


@pytest.mark.parametrize(
    "place", ["s0.zarr", "s1", "s0.zarr/labels/x", "new.ome.zarr", "labels", "labels/x/y", "a.tif"]
)
def test_the_api_never_writes_inside_an_image_but_at_labels_name(s0_image, place):
    before = digest(s0_image)
    with pytest.raises(ValueError, match=f"lies inside the OME-Zarr image {s0_image}"):
        io.write_labels(s0_image / place, np.ones((64, 80), np.uint8), "YX", overwrite=True)
    with pytest.raises(ValueError, match="lies inside the OME-Zarr image"):
        io.write_image(s0_image / "s1" / "p.tif", np.ones((64, 80), np.float32), "YX")
    assert digest(s0_image) == before
    assert sorted(p.name for p in s0_image.iterdir()) == ["s0.zarr", "s1", "zarr.json"]


def test_a_labels_name_that_is_one_of_the_levels_is_refused(tmp_path):
    image = image_store(tmp_path / "img.ome.zarr", ("labels/cells", "s1"))
    with pytest.raises(ValueError, match="inside the input"):
        check_outputs([image], [image / "labels" / "cells"], overwrite=True)
    with pytest.raises(ValueError, match="lies inside the OME-Zarr image"):
        io.write_labels(image / "labels" / "cells", PIXELS > 9, "YX", overwrite=True)
    assert io.read_image(image).data[:].sum() == PIXELS.sum()


def test_links_are_resolved_before_the_check(s0_image, tmp_path):
    (tmp_path / "to_image").symlink_to(s0_image)
    (tmp_path / "to_level.ome.zarr").symlink_to(s0_image / "s0.zarr")
    for output in (
        tmp_path / "to_image" / "s0.zarr",  # through a linked folder
        tmp_path / "to_image" / "new.ome.zarr",
        tmp_path / "to_level.ome.zarr",  # a link that is the level itself
        tmp_path / "to_image",
    ):
        with pytest.raises(ValueError, match=r"inside the input|would replace the input"):
            check_outputs([s0_image], [output], overwrite=True)
    with pytest.raises(ValueError, match="lies inside the OME-Zarr image"):
        io.write_labels(tmp_path / "to_image" / "x.zarr", PIXELS > 9, "YX", overwrite=True)
    (s0_image / "labels").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match="lies inside the OME-Zarr image"):  # led out by a link
        io.write_labels(s0_image / "labels" / "cells", PIXELS > 9, "YX")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_output_that_is_a_link_is_replaced_never_followed(tmp_path):
    someone_else = tmp_path / "theirs"
    someone_else.mkdir()
    (someone_else / "data.txt").write_text("keep me")
    (tmp_path / "out.ome.zarr").symlink_to(someone_else)
    io.write_labels(tmp_path / "out.ome.zarr", PIXELS > 500, "YX", overwrite=True)
    assert not (tmp_path / "out.ome.zarr").is_symlink()
    assert io.read_image(tmp_path / "out.ome.zarr").data[:].sum() == (PIXELS > 500).sum()
    assert (someone_else / "data.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ome.zarr", "theirs"]


def test_the_documented_rerun_into_labels_works_and_leaves_nothing_behind(s0_image, capsys):
    before = digest(s0_image / "s0.zarr")
    target = s0_image / "labels" / "cells"
    for _ in range(2):  # the second run replaces the first with --overwrite
        argv = ["predict", str(s0_image), "-o", str(target), "--quiet", "--overwrite"]
        assert main(argv) == 0, capsys.readouterr().err
    assert digest(s0_image / "s0.zarr") == before
    assert sorted(p.name for p in (s0_image / "labels").iterdir()) == ["cells", "zarr.json"]
    assert omezarr.label_images(s0_image) == [target]
    assert io.read_image(target).data[:].max() >= 1
    assert main(["predict", str(s0_image), "-o", str(s0_image / "s0.zarr"), "--overwrite"]) == 1
    assert "lies inside the input" in capsys.readouterr().err
    assert digest(s0_image / "s0.zarr") == before


@pytest.mark.parametrize("failing", ["pyramid", "swap"])
def test_a_failed_replacement_keeps_the_old_result_and_leaves_nothing(
    tmp_path, monkeypatch, failing
):
    image = image_store(tmp_path / "img.ome.zarr", ("0", "1"))
    target = image / "labels" / "cells"
    io.write_labels(target, PIXELS > 500, "YX")
    old = digest(target)
    real_replace = os.replace

    def failing_replace(source, destination):
        if Path(source).name.startswith(".cells.partial-"):  # the finished result's move
            raise OSError("disk full")
        real_replace(source, destination)

    def failing_pyramid(source, target):
        raise OSError("disk full")

    if failing == "swap":
        monkeypatch.setattr(omezarr.os, "replace", failing_replace)
    else:
        monkeypatch.setattr(omezarr, "downsample_into", failing_pyramid)
    with pytest.raises(OSError, match="disk full"):
        io.write_labels(target, PIXELS > 100, "YX", overwrite=True)
    assert digest(target) == old
    assert sorted(p.name for p in (image / "labels").iterdir()) == ["cells", "zarr.json"]


def test_a_failed_first_write_removes_the_folders_it_made(tmp_path, monkeypatch):
    image = image_store(tmp_path / "img.ome.zarr", ("0", "1"))
    monkeypatch.setattr(omezarr, "downsample_into", lambda *_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        io.write_labels(image / "labels" / "cells", np.ones((64, 80), np.uint8), "YX")
    with pytest.raises(ZeroDivisionError):
        io.write_labels(tmp_path / "new" / "deep" / "x.ome.zarr", np.ones((300, 9)), "YX")
    assert sorted(p.name for p in image.iterdir()) == ["0", "1", "zarr.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.ome.zarr"]


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"path": "../outside"}, "datasets[0].path"),
        ({"path": "https://example.org/img.zarr/0"}, "datasets[0].path"),
        (
            {"coordinateTransformations": [{"type": "scale", "scale": [0, 1]}]},
            "datasets[0].coordinateTransformations[0].scale",
        ),
        (
            {"coordinateTransformations": [{"type": "scale", "scale": [1]}]},
            "datasets[0].coordinateTransformations[0].scale",
        ),
    ],
)
def test_the_command_line_says_which_field_of_which_store(store, decoy, fields, named, capsys):
    with_dataset(store, **fields)
    for argv in (["info", str(store)], ["predict", str(store), "-o", str(store.parent / "o")]):
        assert main(argv) == 1
        error = capsys.readouterr().err
        assert f"{store}: multiscales[0].{named}" in error and len(error.splitlines()) == 1
    assert sorted(p.name for p in store.parent.iterdir()) == ["img.ome.zarr", "outside"]


def test_a_tiff_output_that_is_a_link_is_replaced_and_a_failed_one_leaves_the_old(
    tmp_path, monkeypatch
):
    theirs = tmp_path / "theirs.tif"
    io.write_image(theirs, np.full((8, 8), 3, np.uint8), "YX")
    (tmp_path / "out.tif").symlink_to(theirs)
    io.write_labels(tmp_path / "out.tif", PIXELS > 500, "YX", overwrite=True)
    assert not (tmp_path / "out.tif").is_symlink() and io.read_image(theirs).data.max() == 3

    def dies_half_way(temporary, *args, **kwargs):
        Path(temporary).write_bytes(b"II*\0 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io.tifffile, "imwrite", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.write_labels(tmp_path / "out.tif", PIXELS > 100, "YX", overwrite=True)
    assert io.read_image(tmp_path / "out.tif").data.sum() == (PIXELS > 500).sum()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "theirs.tif"]


@pytest.mark.parametrize("name", ["o.tif", "o.ome.zarr"])
def test_a_result_that_fails_mid_run_leaves_no_file_and_no_folder(tmp_path, name):
    from napari_unet.core.io.results import result_file

    target = tmp_path / "new" / "deeper" / name
    with (
        pytest.raises(RuntimeError, match="cancelled"),
        result_file(target, (64, 80), "YX", "instances", None, overwrite=False) as result,
    ):
        result.array[:10] = 1
        raise RuntimeError("cancelled")
    assert list(tmp_path.iterdir()) == []
