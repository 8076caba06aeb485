"""The sub-commands, each a ``register(subparsers)`` function that sets ``run``."""

from __future__ import annotations

from napari_unet.cli.export import register_export
from napari_unet.cli.predict import register_info, register_models, register_predict
from napari_unet.cli.train import register_evaluate, register_train

REGISTRY = [
    register_predict,
    register_models,
    register_info,
    register_train,
    register_evaluate,
    register_export,
]
