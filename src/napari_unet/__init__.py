"""napari-unet: U-Net segmentation of microscopy images.

The public API is imported lazily, so that napari can read this plugin's manifest at start-up
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "UNet": "napari_unet.core.network",
    "UNetConfig": "napari_unet.core.network",
    "Model": "napari_unet.core.models",
    "ModelDescription": "napari_unet.core.models",
    "load_model": "napari_unet.core.models",
    "save_model": "napari_unet.core.models",
    "list_models": "napari_unet.core.models",
    "CancelToken": "napari_unet.core.progress",
    "Cancelled": "napari_unet.core.progress",
    "segment": "napari_unet.core.predict",
    "Predictor": "napari_unet.core.predict",
    "read_image": "napari_unet.core.io",
    "write_labels": "napari_unet.core.io",
    "segment_layer": "napari_unet._napari.layer_data",
    "train": "napari_unet.core.train",
    "Augmenter": "napari_unet.core.augment",
    "TrainingProgress": "napari_unet.core.train",
    "evaluate": "napari_unet.core.evaluate",
    "export_bioimageio": "napari_unet.core.bioimageio.export",
    "load_bioimageio": "napari_unet.core.bioimageio.load",
}

__all__ = sorted(_API)

if TYPE_CHECKING:
    from napari_unet._napari.layer_data import segment_layer
    from napari_unet.core.augment import Augmenter
    from napari_unet.core.bioimageio.export import export_bioimageio
    from napari_unet.core.bioimageio.load import load_bioimageio
    from napari_unet.core.evaluate import evaluate
    from napari_unet.core.io import read_image, write_labels
    from napari_unet.core.models import (
        Model,
        ModelDescription,
        list_models,
        load_model,
        save_model,
    )
    from napari_unet.core.network import UNet, UNetConfig
    from napari_unet.core.predict import Predictor, segment
    from napari_unet.core.progress import Cancelled, CancelToken
    from napari_unet.core.train import TrainingProgress, train


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
