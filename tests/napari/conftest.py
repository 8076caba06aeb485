"""Tiny models and images so every napari test runs in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.models.network import UNetConfig
from napari_unet.core.models.registry import USER_MODELS_ENV, Model, ModelDescription, save_model


def _save_tiny_model(folder: Path, name: str, spatial_dims: int, distance: bool = False) -> str:
    classes = ["background", "interior", "boundary"] + (["distance"] if distance else [])
    architecture = UNetConfig(
        spatial_dims=spatial_dims,
        in_channels=1,
        out_channels=len(classes),
        depth=2,
        base_channels=4,
        padding="same",
    )
    description = ModelDescription(
        name=name,
        architecture=architecture,
        output_kind="instances",
        class_names=classes,
    )
    save_model(Model.create(description), folder / name)
    return name


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder for user models, in place of the user's own."""
    folder = tmp_path / "models"
    monkeypatch.setenv(USER_MODELS_ENV, str(folder))
    return folder


@pytest.fixture
def tiny_model(models_dir: Path) -> str:
    """Save a tiny untrained 2D instance model as a user model; return its name."""
    return _save_tiny_model(models_dir, "tiny-nuclei", spatial_dims=2)


@pytest.fixture
def tiny_distance_model(models_dir: Path) -> str:
    """Save a tiny untrained 2D instance model with a distance output; return its name."""
    return _save_tiny_model(models_dir, "tiny-distance", spatial_dims=2, distance=True)


@pytest.fixture
def tiny_3d_model(models_dir: Path) -> str:
    """Save a tiny untrained 3D instance model as a user model; return its name."""
    return _save_tiny_model(models_dir, "tiny-3d", spatial_dims=3)


@pytest.fixture
def blobs() -> np.ndarray:
    """A 96x128 uint8 image of bright discs on a dark background."""
    yy, xx = np.mgrid[:96, :128]
    image = np.zeros((96, 128), np.float32)
    for cy, cx in [(20, 30), (50, 80), (70, 30), (30, 100)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = 200
    rng = np.random.default_rng(0)
    return (image + rng.normal(0, 10, image.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_model):
    """A viewer with the Segment dock, its model the tiny one."""
    from napari_unet._napari.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.model.value = tiny_model
    return viewer, widget
