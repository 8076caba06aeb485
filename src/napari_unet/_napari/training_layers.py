"""Training on painted napari layers: the Train dock's one call into the engine, without Qt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Image, Labels

    from napari_unet.core.models.registry import Model


def training_pairs(
    image: Image, labels: Labels, spatial_dims: int = 2
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cut an image layer and its painted Labels layer into the planes (or volumes) to train on.

    Only planes with at least one painted pixel are kept: on a stack the user annotates a few
    slices, and an unpainted slice means "not done yet", not "all background".
    """
    image_data, label_data = np.asarray(image.data), np.asarray(labels.data)
    if image_data.shape[: label_data.ndim] != label_data.shape:
        raise ValueError(
            f"labels {labels.name!r} {label_data.shape} do not match image {image.name!r} "
            f"{image_data.shape[: label_data.ndim]}: paint on a Labels layer of the image's shape"
        )
    if label_data.ndim < spatial_dims:
        raise ValueError(f"a {spatial_dims}D model needs {spatial_dims}D images")
    planes = label_data.shape[-spatial_dims:]
    channels = image_data.shape[label_data.ndim :]
    images = image_data.reshape(-1, *planes, *channels)
    masks = label_data.reshape(-1, *planes)
    painted = [index for index, mask in enumerate(masks) if mask.any()]
    if not painted:
        raise ValueError(f"labels {labels.name!r} are empty: paint a few objects first")
    return [images[i] for i in painted], [masks[i] for i in painted]


def train_on_layers(
    image: Image,
    labels: Labels,
    *,
    name: str,
    base_model: str | Path | Model | None = None,
    **options: Any,
) -> Path:
    """Train a model on painted labels and save it as a user model; return its folder.

    The saved model appears in :func:`napari_unet.core.models.registry.list_models` at once, hence
    in the Segment widget. ``options`` go to :func:`napari_unet.core.train.loop.train` (``target``,
    ``epochs``, ``sparse``, ``progress``, ``cancel``...).
    """
    from napari_unet.core.models.registry import (
        list_models,
        load_model,
        save_model,
        user_models_dir,
    )
    from napari_unet.core.train.loop import train

    if name in list_models(include_user=False):
        raise ValueError(f"{name!r} is a built-in model; save under another name")
    start = load_model(base_model) if base_model is not None else None
    spatial_dims = start.description.spatial_dims if start is not None else 2
    images, masks = training_pairs(image, labels, spatial_dims)
    model = train(images, masks, base_model=start, name=name, **options)
    return save_model(model, user_models_dir() / name, overwrite=True)
