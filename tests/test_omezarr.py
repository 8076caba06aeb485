"""OME-Zarr in and out: NGFF 0.4/0.5 reading, multiscale label writing, bounded memory."""

import json
import tracemalloc

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Reader

from napari_unet.cli import main
from napari_unet.cli.predict import expand_inputs
from napari_unet.core.io import images as io
from napari_unet.core.io import omezarr
from napari_unet.core.predict.predictor import segment
from ngff import ngff_image
from tiny_models import make_model


@pytest.fixture
def cells(rng):
    return (rng.random((2, 60, 52)) * 1000).astype(np.uint16)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_read_keeps_axes_levels_and_pixel_size(tmp_path, cells, version):
    path = ngff_image(tmp_path / "cells.ome.zarr", cells, version)
    assert omezarr.is_ome_zarr(path)
    image = io.read_image(path)
    assert (image.axes, image.shape, image.is_labels) == ("CYX", (2, 60, 52), False)
    assert image.pixel_size_um == pytest.approx({"Y": 0.5, "X": 0.25})
    assert isinstance(image.data, zarr.Array)  # lazy: nothing read yet
    np.testing.assert_array_equal(image.data[:], cells)
    coarse = io.read_image(path, level=1)
    assert coarse.shape == (2, 30, 26)
    assert coarse.pixel_size_um == pytest.approx({"Y": 1.0, "X": 0.5})
    assert [level.shape for level in coarse.levels] == [(2, 60, 52), (2, 30, 26)]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_round_trip_with_a_nearest_neighbour_pyramid(tmp_path, rng, version):
    labels = rng.integers(0, 300, (700, 520))  # int64 in, the smallest dtype out
    path = omezarr.write_labels(
        tmp_path / "labels.ome.zarr", labels, "YX", {"Y": 2.0, "X": 0.5}, version=version
    )
    first = omezarr.read_ome_zarr(path)
    assert first.is_labels and first.data.dtype == np.uint16
    np.testing.assert_array_equal(first.data[:], labels)
    assert [level.shape for level in first.levels] == [(700, 520), (350, 260), (175, 130)]
    for level in (1, 2):
        image = omezarr.read_ome_zarr(path, level)
        np.testing.assert_array_equal(image.data[:], labels[:: 2**level, :: 2**level])
        assert image.pixel_size_um == pytest.approx({"Y": 2.0 * 2**level, "X": 0.5 * 2**level})
    assert zarr.open_group(path, mode="r").metadata.zarr_format == {"0.4": 2, "0.5": 3}[version]


def test_write_labels_of_io_writes_ngff_0_5(tmp_path):
    path = io.write_labels(tmp_path / "small.zarr", np.ones((5, 6), int), "YX")
    assert json.loads((path / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    assert omezarr.read_ome_zarr(path).data[:].sum() == 30


def test_3d_pyramid_halves_y_and_x_only(tmp_path, rng):
    labels = rng.integers(0, 5, (4, 300, 40))
    path = omezarr.write_labels(tmp_path / "stack.ome.zarr", labels, "ZYX", {"Z": 2.0})
    levels = omezarr.read_ome_zarr(path).levels
    assert [level.shape for level in levels] == [(4, 300, 40), (4, 150, 20)]
    np.testing.assert_array_equal(levels[1][:], labels[:, ::2, ::2])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_inside_an_image_follow_its_levels_and_ome_zarr_reads_them(tmp_path, cells, version):
    container = ngff_image(tmp_path / "cells.ome.zarr", cells, version)
    labels = (cells[0] > 500).astype(np.uint8) * 3
    io.write_labels(container / "labels" / "nuclei", labels, "YX")
    nodes = list(Reader(parse_url(str(container)))())
    [label] = [node for node in nodes if any(isinstance(spec, Label) for spec in node.specs)]
    assert [tuple(level.shape) for level in label.data] == [(60, 52), (30, 26)]
    np.testing.assert_array_equal(np.asarray(label.data[1]), labels[::2, ::2])
    assert label.metadata["name"] == "nuclei"
    read = io.read_image(container / "labels" / "nuclei", level=1)
    assert read.is_labels and read.pixel_size_um == pytest.approx({"Y": 1.0, "X": 0.5})
    assert omezarr.label_images(container) == [container / "labels" / "nuclei"]


def test_existing_labels_are_kept_unless_overwrite(tmp_path, cells):
    container = ngff_image(tmp_path / "cells.ome.zarr", cells)
    target = container / "labels" / "nuclei"
    io.write_labels(target, np.ones((60, 52), np.uint8), "YX")
    with pytest.raises(FileExistsError, match="overwrite"):
        io.write_labels(target, np.zeros((60, 52), np.uint8), "YX")
    io.write_labels(target, np.full((60, 52), 2, np.uint8), "YX", overwrite=True)
    assert omezarr.read_ome_zarr(target).data[0, 0] == 2
    assert omezarr.label_images(container) == [target]  # listed once
    assert sorted(p.name for p in (container / "labels").iterdir()) == ["nuclei", "zarr.json"]


def test_labels_must_match_their_image(tmp_path, cells):
    container = ngff_image(tmp_path / "cells.ome.zarr", cells)
    with pytest.raises(ValueError, match=r"do not match the image"):
        omezarr.create_labels(container / "labels" / "x", (60, 50), "YX")
    with pytest.raises(ValueError, match="not an OME-Zarr image"):
        omezarr.create_labels(tmp_path / "plain.zarr" / "labels" / "x", (6, 5), "YX")


def test_an_interrupted_write_leaves_nothing_that_looks_complete(tmp_path):
    target = tmp_path / "labels.ome.zarr"
    with pytest.raises(RuntimeError), omezarr.create_labels(target, (40, 30), "YX") as writer:
        writer.array[:10] = 5
        assert not target.exists() and not omezarr.is_ome_zarr(target)  # until finish()
        raise RuntimeError("killed mid-run")
    assert list(tmp_path.iterdir()) == []


def test_the_engine_writes_level_zero_through_out(tmp_path, blobs):
    model = make_model()
    expected = segment(blobs, model, axes="YX")
    with omezarr.create_labels(tmp_path / "seg.ome.zarr", blobs.shape, "YX") as writer:
        segment(blobs, model, axes="YX", out=writer.array)
        [level] = writer.finish()
    np.testing.assert_array_equal(level[:], expected)


def test_pyramid_and_streaming_read_one_chunk_at_a_time(tmp_path):
    """A 64 MB lazy level streams into a pyramid with a few MB of memory."""
    source = zarr.create_array(
        tmp_path / "source.zarr", shape=(4096, 4096), chunks=(512, 512), dtype="uint32"
    )
    source[1000:1010, 2000:2010] = 7
    tracemalloc.start()
    try:
        path = omezarr.write_labels(tmp_path / "big.ome.zarr", source, "YX", chunks=(512, 512))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MB"
    levels = omezarr.read_ome_zarr(path).levels
    assert [level.shape[0] for level in levels] == [4096, 2048, 1024, 512, 256]
    assert levels[1][500, 1000] == 7 and levels[4][63, 125] == 7


def write_group(path, attributes, version="0.5"):
    path.mkdir()
    if version == "0.5":
        metadata = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": attributes}}
        (path / "zarr.json").write_text(json.dumps(metadata))
    else:
        (path / ".zgroup").write_text('{"zarr_format": 2}')
        (path / ".zattrs").write_text(json.dumps(attributes))
    return path


def multiscales(axes, version="0.5"):
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]
    return {"version": version, "multiscales": [{"axes": axes, "datasets": datasets}]}


def test_bad_metadata_gets_a_specific_error(tmp_path, cells):
    plain = write_group(tmp_path / "plain.zarr", {})
    with pytest.raises(ValueError, match="no OME-Zarr multiscales metadata"):
        io.read_image(plain)
    odd = write_group(tmp_path / "odd.zarr", multiscales([{"name": "angle"}, {"name": "x"}]))
    with pytest.raises(ValueError, match=r"axes \['angle', 'x'\].*t, c, z, y, x"):
        io.read_image(odd)
    old = write_group(tmp_path / "old.zarr", multiscales(["y", "x"], "0.3"), version="0.4")
    with pytest.raises(ValueError, match=r"version 0\.3; napari-unet reads 0\.4 and 0\.5"):
        io.read_image(old)
    broken = write_group(tmp_path / "broken.zarr", {"multiscales": [{"datasets": []}]})
    with pytest.raises(ValueError, match="corrupt OME-Zarr multiscales metadata"):
        io.read_image(broken)
    (tmp_path / "garbled.zarr").mkdir()
    (tmp_path / "garbled.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt zarr metadata"):
        io.read_image(tmp_path / "garbled.zarr")
    image = ngff_image(tmp_path / "cells.ome.zarr", cells)
    with pytest.raises(ValueError, match=r"2 resolution level\(s\) \(0 to 1\); no 2"):
        io.read_image(image, level=2)
    with pytest.raises(FileNotFoundError, match="no such OME-Zarr"):
        io.read_image(tmp_path / "missing.ome.zarr")


def test_cli_takes_a_zarr_folder_as_one_image(tmp_path, cells, capsys):
    image = ngff_image(tmp_path / "data" / "cells.ome.zarr", cells)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    assert expand_inputs([str(image)]) == [image]
    assert expand_inputs([str(tmp_path / "data")]) == [image]
    assert expand_inputs([str(tmp_path / "data" / "*.zarr")]) == [image]
    assert main(["info", str(image)]) == 0
    printed = capsys.readouterr().out
    assert "axes:       CYX" in printed and "Y 0.5 µm, X 0.25 µm" in printed
    assert "levels:     (2, 60, 52), (2, 30, 26)" in printed


@pytest.mark.parametrize("pixel_size", [None, 0.25])
def test_a_tiff_without_pixel_size_gives_an_ome_zarr_without_a_unit(tmp_path, rng, pixel_size):
    source = tmp_path / "cells.tif"
    sizes = {} if pixel_size is None else {"Y": pixel_size, "X": pixel_size}
    io.write_image(source, rng.integers(0, 9, (300, 280)).astype(np.uint8), "YX", sizes)
    image = io.read_image(source)
    labels = io.write_labels(tmp_path / "cells.ome.zarr", image.data, "YX", image.pixel_size_um)
    axes = omezarr.read_multiscale(labels).axes_metadata
    assert [axis.get("unit") for axis in axes] == [None if pixel_size is None else "micrometer"] * 2
    for level in (0, 1):
        expected = {} if pixel_size is None else dict.fromkeys("YX", pixel_size * 2**level)
        assert io.read_image(labels, level=level).pixel_size_um == pytest.approx(expected)


def test_a_unitless_ngff_scale_other_than_one_is_read_as_micrometres(tmp_path, cells):
    path = ngff_image(tmp_path / "cells.ome.zarr", cells, pixel_size=(0.5, 1.0))
    metadata = json.loads((path / "zarr.json").read_text())
    for axis in metadata["attributes"]["ome"]["multiscales"][0]["axes"]:
        axis.pop("unit", None)
    (path / "zarr.json").write_text(json.dumps(metadata))
    assert io.read_image(path).pixel_size_um == {"Y": 0.5, "X": 1.0}
    assert io.read_image(path, level=1).pixel_size_um == {"Y": 1.0, "X": 2.0}
