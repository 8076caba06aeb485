"""OME-Zarr in napari: multiscale reading, napari-ome-zarr reading our labels, lazy Segment."""

import numpy as np
import pytest
import zarr
from napari.layers import Image, Layer
from napari_ome_zarr._reader import napari_get_reader

from napari_unet._napari.layer_data import segment_layer
from napari_unet.core.io import images as io
from napari_unet.core.predict.predictor import segment
from napari_unet.core.progress import Cancelled, CancelToken
from ngff import ngff_image

PLUGIN = "napari-unet-segment"


@pytest.fixture
def container(tmp_path, blobs):
    """A two-channel, two-level OME-Zarr image with a label image in its labels group."""
    path = ngff_image(tmp_path / "cells.ome.zarr", np.stack([blobs, 255 - blobs]))
    io.write_labels(path / "labels" / "nuclei", (blobs > 100).astype(np.uint8), "YX")
    return path


def test_reader_opens_a_multiscale_image_with_scale_and_its_labels(make_napari_viewer, container):
    viewer = make_napari_viewer()
    first, second, labels = viewer.open(container, plugin=PLUGIN)
    assert first.multiscale and [level.shape for level in first.data] == [(96, 128), (48, 64)]
    assert tuple(first.scale) == (0.5, 0.25) and tuple(first.axis_labels) == ("y", "x")
    assert not isinstance(first.data[0], np.ndarray) and second.scale[0] == 0.5  # lazy
    assert labels.name == "nuclei" and labels.multiscale and tuple(labels.scale) == (0.5, 0.25)
    assert type(labels).__name__ == "Labels"


def test_napari_ome_zarr_reads_our_labels(container, tmp_path, blobs):
    [*_, (data, meta, kind)] = napari_get_reader(str(container))(str(container))
    assert kind == "labels" and [level.shape for level in data] == [(96, 128), (48, 64)]
    assert list(meta["scale"]) == [0.5, 0.25]
    alone = io.write_labels(
        tmp_path / "alone.ome.zarr", np.tile(blobs > 100, (3, 3)), "YX", {"Y": 2.0, "X": 2.0}
    )
    [(data, meta, kind)] = napari_get_reader(str(alone))(str(alone))
    assert kind == "labels" and [level.shape for level in data] == [(288, 384), (144, 192)]
    assert list(meta["scale"]) == [2.0, 2.0]


def test_segment_on_a_multiscale_layer_gives_lazy_multiscale_labels(tiny_model, blobs, tmp_path):
    image = np.tile(blobs, (3, 3))
    layer = Image([image, image[::2, ::2]], multiscale=True, scale=(0.5, 0.5), name="big")
    store = tmp_path / "big-labels.ome.zarr"
    data, meta, kind = segment_layer(layer, tiny_model, output="instances", store=store)
    assert kind == "labels" and meta["multiscale"] and tuple(meta["scale"]) == (0.5, 0.5)
    assert all(isinstance(level, zarr.Array) for level in data)  # on disk, read lazily
    assert [level.shape for level in data] == [(288, 384), (144, 192)]
    expected = segment(image, tiny_model, axes="YX", output="instances")
    np.testing.assert_array_equal(data[0][:], expected)
    np.testing.assert_array_equal(data[1][:], expected[::2, ::2])
    assert io.read_image(store).is_labels
    assert Layer.create(data, meta, kind).multiscale
    record = meta["metadata"]["napari_unet"]
    assert zarr.open_group(store, mode="r").attrs["napari_unet"] == record  # as the CLI writes
    assert record["input"] == "big" and record["options"]["output"] == "instances"


def test_a_cancelled_multiscale_segment_leaves_no_store(tiny_model, blobs, tmp_path):
    image = np.tile(blobs, (3, 3))
    layer = Image([image, image[::2, ::2]], multiscale=True)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment_layer(layer, tiny_model, store=tmp_path / "out" / "labels.ome.zarr", cancel=token)
    assert not (tmp_path / "out").exists()  # not even the folder made for it
