"""Tiny models and images so every napari test runs in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.models import USER_MODELS_ENV, Model, ModelDescription, save_model
from napari_unet.core.network import UNetConfig

TINY = "tiny-nuclei"


@pytest.fixture
def tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Save a tiny untrained 2D instance model as the only user model; return its name."""
    folder = tmp_path / "models"
    monkeypatch.setenv(USER_MODELS_ENV, str(folder))
    architecture = UNetConfig(
        spatial_dims=2, in_channels=1, out_channels=3, depth=2, base_channels=4, padding="same"
    )
    description = ModelDescription(
        name=TINY,
        architecture=architecture,
        output_kind="instances",
        class_names=["background", "interior", "boundary"],
    )
    save_model(Model.create(description), folder / TINY)
    return TINY


@pytest.fixture
def blobs() -> np.ndarray:
    """A 96x128 uint8 image of bright discs on a dark background."""
    yy, xx = np.mgrid[:96, :128]
    image = np.zeros((96, 128), np.float32)
    for cy, cx in [(20, 30), (50, 80), (70, 30), (30, 100)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = 200
    rng = np.random.default_rng(0)
    return (image + rng.normal(0, 10, image.shape)).clip(0, 255).astype(np.uint8)
