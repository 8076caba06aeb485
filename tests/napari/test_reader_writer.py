from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from napari.layers import Labels, Layer

from napari_unet._napari.layer_data import segment_layer
from napari_unet._napari.reader import get_reader
from napari_unet.core.io.images import read_image, write_labels
from napari_unet.core.provenance import sidecar_path


def test_labels_layer_round_trips_through_writer_and_reader(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    labels = np.zeros((3, 40, 50), np.uint16)
    labels[1, 10:20, 5:25] = 7
    layer = viewer.add_labels(labels, scale=(2.0, 0.5, 0.25), axis_labels=("z", "y", "x"))
    written = layer.save(str(tmp_path / "cells.tif"), plugin="napari-unet-segment")

    [back] = viewer.open(written[0], plugin="napari-unet-segment")
    assert isinstance(back, Labels)
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.scale, (2.0, 0.5, 0.25))
    assert back.axis_labels == ("z", "y", "x")


def test_image_keeps_its_pixel_size_and_splits_channels(make_napari_viewer, tmp_path) -> None:
    path = tmp_path / "two-channels.tif"
    data = np.arange(2 * 5 * 30 * 40, dtype=np.uint16).reshape(5, 2, 30, 40)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"},
    )
    layers = make_napari_viewer().open(str(path), plugin="napari-unet-segment")
    assert [layer.name for layer in layers] == ["two-channels", "two-channels [1]"]
    for channel, layer in enumerate(layers):
        np.testing.assert_array_equal(layer.data, data[:, channel])
        np.testing.assert_allclose(layer.scale, (1.5, 0.2, 0.2))


def test_reader_declines_files_it_cannot_read(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None


def test_label_files_open_as_labels_layers(make_napari_viewer, tmp_path) -> None:
    labels = np.array([[0, 1], [2, 2]], np.uint8).repeat(8, 0).repeat(8, 1)
    path = write_labels(tmp_path / "l.tif", labels, "YX")
    [layer] = make_napari_viewer().open(str(path), plugin="napari-unet-segment")
    assert isinstance(layer, Labels)


def test_a_layer_in_nanometres_is_written_in_micrometres(make_napari_viewer, tmp_path) -> None:
    labels = np.zeros((2, 40, 50), np.uint16)
    labels[1, 10:20, 5:25] = 3
    layer = make_napari_viewer().add_labels(
        labels, scale=(50.0, 4.0, 4.0), units=("nm", "nm", "nm"), axis_labels=("z", "y", "x")
    )
    [written] = layer.save(str(tmp_path / "em.tif"), plugin="napari-unet-segment")
    assert read_image(written).pixel_size_um == pytest.approx({"Z": 0.05, "Y": 0.004, "X": 0.004})


def test_a_tiff_without_pixel_size_claims_none(make_napari_viewer, blobs, tmp_path) -> None:
    tifffile.imwrite(tmp_path / "plain.tif", blobs)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(tmp_path / "plain.tif"), plugin="napari-unet-segment")
    assert tuple(map(str, image.units)) == ("pixel", "pixel") and tuple(image.scale) == (1, 1)
    viewer.add_labels(np.zeros(blobs.shape, np.uint8))  # a layer napari makes on its own
    assert viewer.layers.extent.units is not None  # napari's "Inconsistent units" stays silent
    layer = viewer.layers[-1]
    [written] = layer.save(str(tmp_path / "plain-labels.tif"), plugin="napari-unet-segment")
    assert read_image(written).pixel_size_um == {}
    zarr_labels = write_labels(tmp_path / "plain.ome.zarr", np.tile(blobs > 100, (3, 3)), "YX")
    [opened] = viewer.open(str(zarr_labels), plugin="napari-unet-segment")  # as the CLI writes
    assert opened.multiscale and tuple(map(str, opened.units)) == ("pixel", "pixel")
    assert viewer.layers.extent.units is not None


def test_a_segmented_layer_is_saved_with_its_provenance_beside_it(
    make_napari_viewer, tiny_model, blobs, tmp_path
) -> None:
    viewer = make_napari_viewer()
    image = viewer.add_image(blobs, name="blobs")
    labels = viewer.add_layer(Layer.create(*segment_layer(image, tiny_model, device="cpu")))
    [written] = labels.save(str(tmp_path / "cells.tif"), plugin="napari-unet-segment")
    record = json.loads(sidecar_path(written).read_text())
    assert record == json.loads(json.dumps(labels.metadata["napari_unet"]))
    assert record["input"] == "blobs" and record["options"]["device"] == "cpu"
    plain = viewer.add_labels(np.zeros(blobs.shape, np.uint8))  # no provenance
    plain.save(written, plugin="napari-unet-segment")
    assert not sidecar_path(written).exists()  # the old record described other labels
