"""Hardening: a bioimage.io package is bounded before it is trusted; export takes any name.

Each principle is tried with many variants: hostile zip members, zip bombs, YAML alias
bombs, URLs and paths out of the package in every file field, changed files under a declared
sha256, absurd size rules, and model names from anything a user can type. Every refusal must
come early (alone, well under a second) and without the memory the attack asks for.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixed_examples import FIXED_EXAMPLES, HANG_GUARD_S
from foreign_packages import RDF_0_4, foreign_package, sigmoid
from tiny_models import make_model

pytest.importorskip("bioimageio.spec")

from napari_unet.core.bioimageio import is_bioimageio_source
from napari_unet.core.bioimageio.adapter import PackagedNetwork, SizeRule
from napari_unet.core.bioimageio.export import export_bioimageio, file_stem, package_name
from napari_unet.core.bioimageio.load import check_size_rule, load_bioimageio
from napari_unet.core.bioimageio.package import (
    MAX_MEMBERS,
    MAX_PACKAGE_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    PackageError,
    check_yaml_tree,
    member_name,
    read_rdf,
)
from napari_unet.core.bioimageio.processing import UnsupportedPackage
from napari_unet.core.models.network import UNetConfig
from napari_unet.core.models.registry import load_model

FAST = FIXED_EXAMPLES


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real exported package (napari-unet's own, with torchscript and state-dict weights)."""
    return export_bioimageio(make_model(), tmp_path_factory.mktemp("pkg") / "tiny.zip")


@pytest.fixture
def folder(package: Path, tmp_path: Path) -> Path:
    """The package unzipped: its files may be edited."""
    target = tmp_path / "unzipped"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(target)
    return target


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) every attempt to open a connection."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _edit_rdf(folder: Path, old: str, new: str, count: int = 1) -> None:
    rdf = folder / "rdf.yaml"
    text = rdf.read_text()
    assert text.count(old) >= count, old
    rdf.write_text(text.replace(old, new, count))


def _zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder).as_posix())
    return target


def _timed_refusal(error: type[Exception], match: str, call, *args, **kwargs) -> float:
    """Run a call that must be refused; return its seconds and check its memory stayed small."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match):
            call(*args, **kwargs)
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"
    return seconds


# --- no network, files only from inside the package -------------------------------------

FILE_FIELDS = {
    "torchscript weights": "source: weights_torchscript.pt",
    "state-dict weights": "source: weights.pt",
    "napari-unet weights": "source: weights.safetensors",
    "napari-unet card": "source: model.json",
    "input test tensor": "source: test_input.npy",
    "output test tensor": "source: test_output.npy",
    "documentation": "source: README.md",
    "cover": "source: cover.png",
}
URLS = [
    "http://example.org/w.pt",
    "https://zenodo.org/records/1/files/w.pt",
    "HTTP://EXAMPLE.ORG/W.PT",
    "ftp://example.org/w.pt",
    "file:///etc/passwd",
    "s3://bucket/w.pt",
    "https:example.org/w.pt",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("field", list(FILE_FIELDS))
def test_a_url_in_any_file_field_is_refused_without_a_connection(
    folder: Path, no_network: list[object], field: str, url: str
) -> None:
    line = FILE_FIELDS[field]
    _edit_rdf(folder, line, f"source: {url}")
    with pytest.raises(PackageError, match="never downloads") as refused:
        load_bioimageio(folder)
    assert "Download the file yourself" in str(refused.value)
    assert url in str(refused.value)
    assert no_network == []


@pytest.mark.parametrize(
    "source", ["https://bioimage.io/x/rdf.yaml", "http://host/pkg.zip", "ftp://h/m.zip"]
)
def test_a_package_url_is_refused_with_how_to_get_a_local_copy(
    no_network: list[object], source: str
) -> None:
    assert is_bioimageio_source(source)  # so load_model explains, not "no model named"
    with pytest.raises(PackageError, match="Download the package yourself"):
        load_model(source)
    assert no_network == []


def test_a_package_loads_with_the_network_off(package: Path, no_network: list[object]) -> None:
    """Links that are metadata (citations, a repository) are never fetched either."""
    model = load_bioimageio(package, weight_format="torchscript")
    assert model.description.architecture.out_channels == 2
    assert no_network == []


@pytest.mark.filterwarnings("ignore:Conversion of channel size")  # the spec's 0.4 converter
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", ""),  # unchanged: loads offline
        ("test_inputs: [in.npy]", "test_inputs: [https://example.org/in.npy]"),
        ("source: foreign.pt}", "source: 'http://example.org/w.pt'}"),
        ("source: foreign.pt}", "source: foreign.pt, sha256: " + "a" * 64 + "}"),
        ("license: MIT", "license: MIT\nattachments: {files: [ftp://example.org/a.txt]}"),
        ("license: MIT", "license: MIT\ndependencies: conda:../environment.yaml"),
    ],
    ids=["offline", "url-test-input", "url-weights", "wrong-sha256", "url-attachment", "escape"],
)
def test_format_0_4_packages_are_held_to_the_same_rules(
    tmp_path: Path, no_network: list[object], old: str, new: str
) -> None:
    foreign_package(tmp_path, [], sigmoid)  # writes the module and test tensors
    (tmp_path / "rdf.yaml").write_text(RDF_0_4.replace(old, new) if old else RDF_0_4)
    if not old:
        assert load_model(tmp_path / "rdf.yaml").description.normalization["kind"] == "meanstd"
    else:
        with pytest.raises(PackageError, match=r"never downloads|sha256|outside the package"):
            load_model(tmp_path / "rdf.yaml")
    assert no_network == []


@pytest.mark.parametrize(
    "escape",
    ["../outside.pt", "/etc/passwd", "sub/../../outside.pt", "..\\outside.pt", "C:/w.pt"],
)
def test_files_outside_the_package_are_refused(folder: Path, escape: str) -> None:
    _edit_rdf(folder, "source: weights_torchscript.pt", f"source: '{escape}'")
    with pytest.raises(PackageError, match="outside the package"):
        load_bioimageio(folder, weight_format="torchscript")


def test_a_link_out_of_a_package_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.pt"
    shutil.copy(folder / "weights_torchscript.pt", secret)
    (folder / "weights_torchscript.pt").unlink()
    (folder / "weights_torchscript.pt").symlink_to(secret)
    with pytest.raises(PackageError, match="leads outside the package"):
        load_bioimageio(folder, weight_format="torchscript")


@pytest.mark.parametrize(
    ("file", "weight_format"),
    [
        ("weights_torchscript.pt", "torchscript"),
        ("weights.safetensors", None),
        ("model.json", None),
        ("test_output.npy", "torchscript"),
    ],
)
def test_a_file_changed_after_packaging_fails_its_sha256(
    folder: Path, file: str, weight_format: str | None
) -> None:
    data = bytearray((folder / file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / file).write_bytes(bytes(data))
    with pytest.raises(PackageError, match=rf"\({file}\) does not match its sha256"):
        load_bioimageio(folder, weight_format=weight_format)


def test_a_file_without_a_declared_sha256_is_still_bounded(folder: Path) -> None:
    """A test tensor whose header claims terabytes is refused before numpy allocates them."""
    rdf = (folder / "rdf.yaml").read_text()
    rdf = re.sub(r"(source: test_output\.npy)\n\s+sha256: \w+", r"\1", rdf)
    (folder / "rdf.yaml").write_text(rdf)
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 2, 4, 4), np.float32))
    header["shape"] = (1, 2, 10**6, 10**6)
    with (folder / "test_output.npy").open("wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        file.write(b"\0" * 128)
    seconds = _timed_refusal(
        UnsupportedPackage, "declares shape", load_bioimageio, folder, weight_format="torchscript"
    )
    assert seconds < HANG_GUARD_S


# --- zip members --------------------------------------------------------------------------


def _zip_with(tmp_path: Path, package: Path, *members: tuple[zipfile.ZipInfo | str, bytes]) -> Path:
    """The package with extra members added (names and attributes as given)."""
    target = tmp_path / "hostile.zip"
    shutil.copy(package, target)
    with zipfile.ZipFile(target, "a") as archive:
        for info, data in members:
            archive.writestr(info, data)
    return target


@pytest.mark.parametrize(
    "name",
    ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "..\\evil.txt", "C:/evil.txt"],
)
def test_zip_members_outside_the_package_are_refused_before_extraction(
    package: Path, tmp_path: Path, name: str
) -> None:
    hostile = _zip_with(tmp_path, package, (zipfile.ZipInfo(name), b"owned"))
    with pytest.raises(PackageError, match="would land outside the package"):
        load_bioimageio(hostile)
    assert not list(tmp_path.parent.rglob("evil.txt"))


def test_zip_links_duplicates_and_special_files_are_refused(package: Path, tmp_path: Path) -> None:
    link = zipfile.ZipInfo("cover.lnk")
    link.external_attr = 0o120777 << 16
    fifo = zipfile.ZipInfo("pipe")
    fifo.external_attr = 0o010644 << 16
    cases = {
        "symbolic link": (link, b"/etc/passwd"),
        "not a file or folder": (fifo, b""),
        "appears twice": ("README.MD", b"# again"),  # README.md differs in case only
    }
    for message, member in cases.items():
        with pytest.raises(PackageError, match=message):
            load_bioimageio(_zip_with(tmp_path, package, member))


def _patch_declared_size(path: Path, name: str, size: int) -> None:
    """Rewrite a member's uncompressed size in its local and central headers."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = data.find(signature)
        while start >= 0:
            if data[start + name_at : start + name_at + len(encoded)] == encoded:
                data[start + size_at : start + size_at + 4] = size.to_bytes(4, "little")
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("declared", [100, 4096, 2**20])
def test_a_zip_bomb_is_stopped_at_its_declared_size(
    package: Path, tmp_path: Path, declared: int
) -> None:
    """32 MiB of zeros (32 KiB deflated) declared as a small file: read no further than that."""
    bomb = tmp_path / "bomb.zip"
    shutil.copy(package, bomb)
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.bin", "w", force_zip64=False) as member:
            for _ in range(32):
                member.write(bytes(2**20))
    assert bomb.stat().st_size < package.stat().st_size + 2**20
    _patch_declared_size(bomb, "bomb.bin", declared)
    seconds = _timed_refusal(PackageError, "bomb|CRC|declared", load_bioimageio, bomb)
    assert seconds < HANG_GUARD_S


def test_a_zip_declaring_too_much_is_refused_before_reading(package: Path, tmp_path: Path) -> None:
    huge = tmp_path / "huge.zip"
    shutil.copy(package, huge)
    with zipfile.ZipFile(huge, "a") as archive:
        archive.writestr("big.bin", b"x" * 10)
    _patch_declared_size(huge, "big.bin", MAX_PACKAGE_BYTES + 5)
    seconds = _timed_refusal(PackageError, "declares over 2 GiB", load_bioimageio, huge)
    assert seconds < HANG_GUARD_S


def test_a_zip_of_too_many_members_is_refused(tmp_path: Path) -> None:
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as archive:
        for index in range(MAX_MEMBERS + 1):
            archive.writestr(f"f{index}", b"")
    with pytest.raises(PackageError, match=f"{MAX_MEMBERS + 1} members"):
        load_bioimageio(many)


PATH_PARTS = st.sampled_from(["..", ".", "", "a", "b.pt", "C:", "\\", "..\\x", "~", "\0", "é"])


@FAST
@given(st.lists(PATH_PARTS, min_size=1, max_size=6), st.booleans())
def test_any_member_name_is_refused_or_stays_inside(parts: list[str], absolute: bool) -> None:
    raw = ("/" if absolute else "") + "/".join(parts)
    try:
        name = member_name(raw, "pkg.zip")
    except PackageError:
        return
    assert not name.startswith("/")
    assert ".." not in name.replace("\\", "/").split("/")
    assert "\0" not in name and ":" not in name[:2]
    assert (Path("/root-of-package") / name).resolve().is_relative_to("/root-of-package")


# --- YAML ---------------------------------------------------------------------------------


def _laughs(levels: int, fanout: int) -> str:
    """The classic alias bomb: ``fanout ** levels`` strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*l{level - 1}"] * fanout)
        lines.append(f"l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("levels", "fanout"), [(9, 10), (30, 2), (6, 30), (4, 400)])
def test_a_billion_laughs_rdf_is_refused_before_it_expands(
    folder: Path, levels: int, fanout: int
) -> None:
    rdf = folder / "rdf.yaml"
    rdf.write_text(rdf.read_text().replace("%YAML 1.2\n---\n", "") + _laughs(levels, fanout))
    assert rdf.stat().st_size < 30_000
    seconds = _timed_refusal(PackageError, "billion laughs", load_bioimageio, folder)
    assert seconds < HANG_GUARD_S


@FAST
@given(st.integers(1, 12), st.integers(1, 12))
def test_aliases_are_accepted_exactly_while_their_expansion_is_small(
    levels: int, fanout: int
) -> None:
    """Expanded size is counted exactly: small documents pass, large ones are refused."""
    from ruyaml import YAML

    tree = YAML(typ="safe", pure=True).compose(_laughs(levels, fanout))
    # each level: its key, its sequence node, and fanout copies of the level below
    expanded, below = 1, 1
    for _ in range(levels):
        below = 1 + fanout * below
        expanded += 1 + below
    if expanded <= MAX_YAML_NODES and levels + 2 <= MAX_YAML_DEPTH:
        check_yaml_tree(tree, "rdf.yaml")
    else:
        with pytest.raises(PackageError):
            check_yaml_tree(tree, "rdf.yaml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a: &a [*a]\n", "alias loop"),  # a recursive alias
        ("a: " + "[" * 200 + "]" * 200 + "\n", "nests deeper"),
        ("a: " + "[" * 50_000 + "\n", "nests deeper"),
        ("- " * 50_000 + "x\n", "nests deeper"),
        ("b: &b {k0: v, k1: v}\n" + "".join(f"m{i}: {{<<: [*b, *b]}}\n" for i in range(3)), ""),
        ("- just\n- a list\n", "not a YAML mapping"),
        ("a: [unclosed\n", "not readable YAML"),
        ("# " + "x" * (2**17) + "\n", "at most 128 KiB"),
        ("", "is empty"),
    ],
    ids=["loop", "deep", "very-deep", "deep-block", "merges", "list", "unclosed", "large", "empty"],
)
def test_hostile_yaml_is_refused_or_read_bounded(tmp_path: Path, text: str, match: str) -> None:
    rdf = tmp_path / "rdf.yaml"
    rdf.write_text(text)
    start = time.perf_counter()
    if match:
        with pytest.raises(PackageError, match=match):
            read_rdf(rdf, "pkg")
    else:  # merge keys of a small mapping: fine
        assert read_rdf(rdf, "pkg")["m2"] == {"k0": "v", "k1": "v"}
    assert time.perf_counter() - start < HANG_GUARD_S


def test_invalid_utf8_rdf_is_refused(tmp_path: Path) -> None:
    rdf = tmp_path / "rdf.yaml"
    rdf.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(PackageError, match="not readable YAML"):
        read_rdf(rdf, "pkg")


def test_a_package_using_a_few_aliases_still_loads(folder: Path) -> None:
    _edit_rdf(folder, "tags:\n", "tags: &tags\n")
    _edit_rdf(folder, "config:\n", "config:\n  tags_again: *tags\n")
    model = load_bioimageio(folder)
    assert model.description.architecture.depth == 2


# --- size rules ---------------------------------------------------------------------------

EVEN = st.integers(-50, 50).map(lambda n: 2 * n)
INTEGERS = st.one_of(
    st.integers(-(10**12), 10**12), st.sampled_from([0, 1, 2, -1, 2**31, 4096, 4097])
)


@FAST
@given(
    INTEGERS, INTEGERS, INTEGERS, st.integers(-50, 50).map(lambda n: 2 * n), st.sampled_from([2, 3])
)
def test_any_size_rule_is_refused_or_gives_positive_tiles(
    size_min: int, step: int, halo: int, offset: int, dims: int
) -> None:
    rule = SizeRule(size_min, step, offset, halo)
    try:
        check_size_rule(rule, dims)
    except UnsupportedPackage as error:
        assert re.search(r"min|step|halo|offset", str(error))
        return
    config = UNetConfig(spatial_dims=dims, in_channels=1, out_channels=2, depth=0)
    network = PackagedNetwork(None, config, rule, ("bcyx", "bcyx"), (), None, True)
    for wanted in (1, size_min, 3 * size_min + 1):
        size = network.valid_input_size(wanted)
        assert size >= wanted and (size - size_min) % step == 0
        assert network.output_size(size) > 0


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("min: 44", "min: 1000000000", "larger than napari-unet makes"),
        ("step: 4", "step: 100000", "larger than napari-unet makes"),
        ("halo: 20", "halo: 1000000000", "too small for halo"),  # the spec's own check
        ("min: 44", "min: 0", "not a valid bioimage.io model"),  # the spec's own check
        ("step: 4", "step: -4", "not a valid bioimage.io model"),
        ("step: 4", "step: .nan", "not a valid bioimage.io model"),
    ],
    ids=["huge-min", "huge-step", "huge-halo", "zero-min", "negative-step", "nan-step"],
)
def test_absurd_sizes_are_refused_before_any_tensor(
    folder: Path, old: str, new: str, match: str
) -> None:
    _edit_rdf(folder, old, new, count=2)
    seconds = _timed_refusal(
        (UnsupportedPackage, ValueError),
        match,
        load_bioimageio,
        folder,
        weight_format="torchscript",
    )
    assert seconds < HANG_GUARD_S


# --- export names -------------------------------------------------------------------------


def _spec_name_check():
    from bioimageio.spec.model import v0_5
    from pydantic import TypeAdapter

    field = v0_5.ModelDescr.model_fields["name"]
    return TypeAdapter(Annotated.__class_getitem__((field.annotation, *field.metadata)))


SPEC_NAME = _spec_name_check()


@FAST
@given(st.text(max_size=300))
def test_any_model_name_becomes_a_valid_package_and_file_name(name: str) -> None:
    cleaned = package_name(name)
    assert SPEC_NAME.validate_python(cleaned) == cleaned  # the spec's own validator
    assert len(cleaned) <= 64 and cleaned == cleaned.strip()
    stem = file_stem(name)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", stem), stem
    assert stem.upper().split(".")[0] not in {"CON", "PRN", "AUX", "NUL"}
    assert package_name(name) == cleaned  # the same name every time


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("My model/v2 (é)", "My-model-v2-e"),
        ("日本語のモデル", "model"),
        ("42" + "x" * 200, "42" + "x" * 50),
    ],
)
def test_export_writes_any_model_name_into_a_folder(tmp_path: Path, name: str, stem: str) -> None:
    from dataclasses import replace

    from bioimageio.spec import load_description

    model = make_model()
    model.description = replace(model.description, name=name)
    written = export_bioimageio(model, f"{tmp_path}/out/")
    assert written == tmp_path / "out" / f"{stem}.zip"
    described = load_description(written, perform_io_checks=False)
    assert described.validation_summary.status == "valid-format"
    assert name in described.description or len(described.description) == 1024
    assert load_model(written).name == name  # napari-unet keeps the name exactly


def test_export_output_paths(tmp_path: Path) -> None:
    """A .zip of any case is written as given, a folder gets the name, anything else is refused."""
    from napari_unet.core.bioimageio.export import package_path

    (tmp_path / "existing").mkdir()
    assert package_path(tmp_path / "A.ZIP", "m") == tmp_path / "A.ZIP"
    assert package_path(tmp_path / "existing", "My model") == tmp_path / "existing/My-model.zip"
    assert package_path(f"{tmp_path}/new/", "CON") == tmp_path / "new/model-CON.zip"
    for wrong in ("model.tif", "model", "model.zip.part"):
        with pytest.raises(ValueError, match="ending in /"):
            package_path(tmp_path / wrong, "m")
    assert not (tmp_path / "new").exists()  # nothing is written by choosing a path
