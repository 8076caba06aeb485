"""Touching objects and a tiny network trained on them: shared by the distance and flows tests."""

from __future__ import annotations

import numpy as np

from napari_unet.core.models.registry import Model
from napari_unet.core.train.loop import train

TINY = {"depth": 2, "base_channels": 8}


def touching_discs(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of discs that touch, on a noisy background: what instance representations are for."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint16)
    label = 0
    for cy, cx in rng.integers(12, size - 22, size=(2, 2)):
        for dx in (0, 11):
            label += 1
            mask[((yy - cy) ** 2 + (xx - cx - dx) ** 2 < 36) & (mask == 0)] = label
    image = (mask > 0) * 100.0 + rng.normal(0, 10, mask.shape)
    return image.astype(np.float32), mask


def trained_on_touching_discs(
    representation: str,
) -> tuple[Model, list[np.ndarray], list[np.ndarray]]:
    """Train a tiny ``representation`` model on three images of touching discs.

    Returns the model and all four images and masks (the fourth is never trained on).
    """
    pairs = [touching_discs(seed=seed) for seed in range(4)]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    model = train(
        images[:3],
        masks[:3],
        representation=representation,
        architecture=TINY,
        epochs=12,
        steps_per_epoch=10,
        batch_size=4,
        patch_shape=48,
        learning_rate=3e-3,
        val_fraction=0,
        seed=1,
        precision="fp32",  # the same steps on every CPU, with or without bf16 hardware
    )
    return model, images, masks
