"""Training data: image/mask pairs in memory, turned into targets and sampled as patches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.core.augment import Sample
from napari_unet.core.targets import (
    IGNORE_INDEX,
    Target,
    instance_target,
    object_labels,
    semantic_target,
    weight_map,
)

ArrayList = Sequence[np.ndarray]
TIFF_SUFFIXES = (".tif", ".tiff")


def read_pairs(
    images: str | os.PathLike[str] | ArrayList, masks: str | os.PathLike[str] | ArrayList
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and masks as lists of arrays, from lists or from two folders of same-named TIFFs."""
    if isinstance(images, str | os.PathLike) or isinstance(masks, str | os.PathLike):
        if not (isinstance(images, str | os.PathLike) and isinstance(masks, str | os.PathLike)):
            raise TypeError("give images and masks both as folders or both as lists of arrays")
        return _read_folders(Path(images), Path(masks))
    images, masks = list(images), list(masks)
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    if not images:
        raise ValueError("no training images given")
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        if np.shape(image)[: np.ndim(mask)] != np.shape(mask):
            raise ValueError(
                f"image {index} has shape {np.shape(image)} but its mask has {np.shape(mask)}"
            )
    return [np.asarray(image) for image in images], [np.asarray(mask) for mask in masks]


def _read_folders(image_dir: Path, mask_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
    if not names:
        raise FileNotFoundError(f"no TIFF images in {image_dir}")
    missing = [name for name in names if not (mask_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"no mask in {mask_dir} for {missing[:3]} ({len(missing)} in all)")
    return read_pairs(
        [tifffile.imread(image_dir / name) for name in names],
        [tifffile.imread(mask_dir / name) for name in names],
    )


@dataclass
class LabelledImage:
    """One normalised image ``(C, *spatial)`` with its mask, target classes and loss weights."""

    image: np.ndarray
    mask: np.ndarray
    target: np.ndarray
    weights: np.ndarray | None
    foreground: np.ndarray
    """Flat indices of annotated non-background pixels (a subsample), for patch centres."""

    @classmethod
    def build(
        cls,
        image: np.ndarray,
        mask: np.ndarray,
        target: Target,
        sparse: bool,
        with_weights: bool,
        n_classes: int,
    ) -> LabelledImage:
        """Compute the target (and the paper's weight map if asked) for one pair."""
        if target == "instances":
            classes = instance_target(mask, sparse=sparse)
            objects = np.where(classes == 1, object_labels(mask, target, sparse), 0)
        else:
            classes = semantic_target(mask, sparse=sparse)
            objects = object_labels(mask, target, sparse)
        weights = weight_map(classes, objects, n_classes=n_classes) if with_weights else None
        candidates = np.flatnonzero(classes >= (0 if sparse else 1))
        if candidates.size > 20_000:
            candidates = np.random.default_rng(0).choice(candidates, 20_000, replace=False)
        return cls(image, mask, classes, weights, candidates)


class PatchSampler:
    """Draws training patches, centred on annotated foreground often enough to not starve it.

    Parameters
    ----------
    foreground_fraction
        Share of patches centred on a random foreground (or, for sparse labels, annotated)
        pixel; the rest are placed uniformly. Images are drawn with equal chance.
    """

    def __init__(
        self,
        items: Sequence[LabelledImage],
        patch_shape: tuple[int, ...],
        foreground_fraction: float = 0.5,
    ) -> None:
        self.items = list(items)
        self.patch_shape = tuple(patch_shape)
        self.foreground_fraction = foreground_fraction

    def sample(self, rng: np.random.Generator) -> Sample:
        """One ``(image, target, weights)`` patch, padded where the image is smaller."""
        item = self.items[int(rng.integers(len(self.items)))]
        shape = item.target.shape
        if item.foreground.size and rng.random() < self.foreground_fraction:
            centre = np.unravel_index(int(rng.choice(item.foreground)), shape)
            starts = [
                int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, max(0, n - p)))
                for c, p, n in zip(centre, self.patch_shape, shape, strict=True)
            ]
        else:
            starts = [
                int(rng.integers(max(1, n - p + 1)))
                for p, n in zip(self.patch_shape, shape, strict=True)
            ]
        box = tuple(slice(s, s + p) for s, p in zip(starts, self.patch_shape, strict=True))
        image = _pad_to(item.image[(slice(None), *box)], self.patch_shape, "symmetric", None)
        target = _pad_to(item.target[box], self.patch_shape, "constant", IGNORE_INDEX)
        weights = (
            None
            if item.weights is None
            else _pad_to(item.weights[box], self.patch_shape, "constant", 0)
        )
        return image, target, weights


def _pad_to(
    array: np.ndarray, spatial: tuple[int, ...], mode: str, value: float | None
) -> np.ndarray:
    """Pad the trailing spatial axes up to ``spatial``, centred (mirror or constant)."""
    have = array.shape[-len(spatial) :]
    missing = [max(0, want - n) for want, n in zip(spatial, have, strict=True)]
    if not any(missing):
        return array
    widths = [(0, 0)] * (array.ndim - len(spatial)) + [(m // 2, m - m // 2) for m in missing]
    if value is None:
        return np.pad(array, widths, mode=mode)
    return np.pad(array, widths, mode=mode, constant_values=value)


def prepare_image(
    image: np.ndarray, spatial_dims: int, in_channels: int, normalization: dict
) -> np.ndarray:
    """Channels-first float32 image normalised as the model card says.

    A trailing colour axis (``YXC``) is averaged to gray for 1-channel models
    (``normalization["rgb"] == "mean"``, the default) and a gray image is repeated for
    multi-channel models, so one model accepts both kinds of input. With
    ``normalization["dark_background"]``, images that are mostly bright after normalisation
    (stained tissue, brightfield) are inverted, so objects are always bright on dark.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == spatial_dims:
        image = image[np.newaxis]
    elif image.ndim == spatial_dims + 1:
        image = np.moveaxis(image, -1, 0)
    else:
        raise ValueError(
            f"expected a {spatial_dims}D image with optional colour axis, got shape {image.shape}"
        )
    if image.shape[0] != in_channels:
        if in_channels == 1 and normalization.get("rgb", "mean") == "mean":
            image = image.mean(axis=0, keepdims=True)
        elif image.shape[0] == 1:
            image = np.repeat(image, in_channels, axis=0)
        else:
            raise ValueError(
                f"the model expects {in_channels} channels, the image has {image.shape[0]}"
            )
    if normalization.get("kind", "percentile") == "percentile":
        low, high = np.percentile(
            image, [normalization.get("low", 1.0), normalization.get("high", 99.8)]
        )
        image = (image - low) / max(float(high - low), 1e-6)
        if normalization.get("dark_background") and np.median(image) > 0.5:
            image = (
                1 - image
            )  # mostly bright: stained or brightfield, flip to look like fluorescence
    return image.astype(np.float32)
