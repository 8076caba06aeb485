from __future__ import annotations

import numpy as np
import tifffile
from napari.layers import Labels

from napari_unet._napari.reader import get_reader
from napari_unet.core.io import write_labels


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
