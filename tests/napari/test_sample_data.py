from __future__ import annotations

import pytest
from napari.layers import Image


@pytest.mark.parametrize(("key", "shape"), [("nuclei", (384, 512)), ("em", (512, 512))])
def test_samples_open_as_image_layers(make_napari_viewer, key, shape) -> None:
    [layer] = make_napari_viewer().open_sample("napari-unet-segment", key)
    assert isinstance(layer, Image)
    assert layer.data.shape == shape
