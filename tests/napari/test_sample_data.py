from __future__ import annotations

import pytest


@pytest.mark.parametrize(("key", "shape"), [("nuclei", (384, 512)), ("em", (512, 512))])
def test_samples_open_as_image_layers(make_napari_viewer, key, shape) -> None:
    [layer] = make_napari_viewer().open_sample("napari-unet", key)
    assert layer._type_string == "image"
    assert layer.data.shape == shape
