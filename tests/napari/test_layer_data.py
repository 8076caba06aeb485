from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from napari.layers import Image

from napari_unet import segment_layer
from napari_unet._napari.placement import layer_axes
from napari_unet.core.predict.options import PredictOptions


def test_dask_layer_is_segmented_to_labels_of_its_shape(tiny_model, blobs) -> None:
    layer = Image(da.from_array(np.stack([blobs] * 3), chunks=(1, 48, 64)), name="lazy")
    data, meta, kind = segment_layer(layer, tiny_model, mode="2D")
    assert kind == "labels"
    assert data.shape == (3, *blobs.shape)
    assert meta["name"] == f"lazy ({tiny_model})"


def test_multiscale_level_is_placed_with_that_level_scale(tiny_model, blobs) -> None:
    pyramid = [blobs, blobs[::2, ::2]]
    layer = Image(pyramid, multiscale=True, scale=(0.5, 0.5), translate=(3, 4))
    data, meta, _ = segment_layer(layer, tiny_model, level=1)
    assert data.shape == pyramid[1].shape
    np.testing.assert_allclose(meta["scale"], (1.0, 1.0))
    np.testing.assert_allclose(meta["translate"], (3, 4))


def test_one_channel_of_an_rgb_layer_can_be_chosen(tiny_model, blobs) -> None:
    rgb = np.stack([blobs, np.zeros_like(blobs), np.zeros_like(blobs)], axis=-1)
    data, _, _ = segment_layer(Image(rgb, rgb=True), tiny_model, channel=0)
    assert data.shape == blobs.shape


def test_axes_follow_mode_and_reader_labels() -> None:
    stack = np.zeros((2, 4, 8, 8), np.uint8)
    assert layer_axes(Image(stack)) == "TZYX"
    assert layer_axes(Image(stack[0]), mode="2D") == "TYX"
    assert layer_axes(Image(stack[0], axis_labels=("t", "y", "x")), mode="3D") == "ZYX"
    assert layer_axes(Image(np.zeros((8, 8, 3), np.uint8), rgb=True)) == "YXC"


def test_options_come_as_one_object_checked_before_the_model_loads(tiny_model, blobs) -> None:
    rgb = np.stack([blobs, blobs // 2, np.zeros_like(blobs)], axis=-1)
    layer = Image(rgb, rgb=True, name="rgb")
    data, meta, _ = segment_layer(layer, tiny_model, options=PredictOptions(channel=1))
    np.testing.assert_array_equal(data, segment_layer(layer, tiny_model, channel=1)[0])
    assert meta["metadata"]["napari_unet"]["options"]["channel"] == 1
    with pytest.raises(ValueError, match="tile_shape/--tile must be at least 1"):
        segment_layer(layer, "no such model", options=PredictOptions(channel=1), tile_shape=0)
