"""napari-unet: U-Net segmentation of microscopy images.

The public API is imported lazily, so that napari can read this plugin's manifest at start-up
without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_unet._lazy import lazy_exports

__version__ = "0.1.0"

_API = {
    "UNet": "napari_unet.core.models.network",
    "UNetConfig": "napari_unet.core.models.network",
    "Model": "napari_unet.core.models.registry",
    "ModelDescription": "napari_unet.core.models.registry",
    "load_model": "napari_unet.core.models.registry",
    "save_model": "napari_unet.core.models.registry",
    "list_models": "napari_unet.core.models.registry",
    "CancelToken": "napari_unet.core.progress",
    "Cancelled": "napari_unet.core.progress",
    "segment": "napari_unet.core.predict.predictor",
    "Predictor": "napari_unet.core.predict.predictor",
    "PredictOptions": "napari_unet.core.predict.options",
    "read_image": "napari_unet.core.io.images",
    "write_labels": "napari_unet.core.io.images",
    "segment_layer": "napari_unet._napari.layer_data",
    "train": "napari_unet.core.train.loop",
    "Augmenter": "napari_unet.core.train.augment",
    "TrainingProgress": "napari_unet.core.train.loop",
    "TrainOptions": "napari_unet.core.train.options",
    "evaluate": "napari_unet.core.evaluate",
    "export_bioimageio": "napari_unet.core.bioimageio.export",
    "load_bioimageio": "napari_unet.core.bioimageio.load",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _API)

if TYPE_CHECKING:
    from napari_unet._napari.layer_data import segment_layer
    from napari_unet.core.bioimageio.export import export_bioimageio
    from napari_unet.core.bioimageio.load import load_bioimageio
    from napari_unet.core.evaluate import evaluate
    from napari_unet.core.io.images import read_image, write_labels
    from napari_unet.core.models.network import UNet, UNetConfig
    from napari_unet.core.models.registry import (
        Model,
        ModelDescription,
        list_models,
        load_model,
        save_model,
    )
    from napari_unet.core.predict.options import PredictOptions
    from napari_unet.core.predict.predictor import Predictor, segment
    from napari_unet.core.progress import Cancelled, CancelToken
    from napari_unet.core.train.augment import Augmenter
    from napari_unet.core.train.loop import TrainingProgress, train
    from napari_unet.core.train.options import TrainOptions
