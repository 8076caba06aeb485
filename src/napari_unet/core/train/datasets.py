"""Training data: image/mask pairs in memory, turned into targets and sampled as patches."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.io import read_image
from napari_unet.core.models.registry import ModelDescription
from napari_unet.core.normalize import model_input
from napari_unet.core.predict.postprocess import instance_source
from napari_unet.core.train.augment import Sample
from napari_unet.core.train.targets import (
    IGNORE_INDEX,
    center_distance,
    center_potential,
    instance_target,
    object_labels,
    semantic_target,
    weight_map,
)
from napari_unet.names import TIFF_SUFFIXES, Target

ArrayList = Sequence[np.ndarray]


MAX_SEMANTIC_CLASSES = 64
"""More classes than this is almost surely a mask of object labels or of 0/255 values."""


def read_pairs(
    images: str | os.PathLike[str] | ArrayList, masks: str | os.PathLike[str] | ArrayList
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and masks as lists of checked arrays, from lists or from two folders of TIFFs.

    Folders pair files by name. Every pair is checked as prediction checks its input (see
    :func:`check_pair`), so bad data fails before training rather than as a broken model.
    """
    if isinstance(images, str | os.PathLike) or isinstance(masks, str | os.PathLike):
        if not (isinstance(images, str | os.PathLike) and isinstance(masks, str | os.PathLike)):
            raise TypeError("give images and masks both as folders or both as lists of arrays")
        return _read_folders(Path(images), Path(masks))
    images, masks = list(images), list(masks)
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    return _checked(images, masks, [f"image {index}" for index in range(len(images))])


def _read_folders(image_dir: Path, mask_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
    if not names:
        raise FileNotFoundError(f"no TIFF images in {image_dir}")
    missing = [name for name in names if not (mask_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"no mask in {mask_dir} for {missing[:3]} ({len(missing)} in all)")
    return _checked(
        [_read_checked(image_dir / name) for name in names],
        [_read_checked(mask_dir / name) for name in names],
        [str(image_dir / name) for name in names],
    )


def _read_checked(path: Path) -> np.ndarray:
    """Read a TIFF through the same checks as prediction's inputs (what it claims vs its size)."""
    return np.asarray(read_image(path, lazy=False).data)


def object_ids(mask: np.ndarray, name: str = "a mask") -> np.ndarray:
    """Return an instance mask's object labels; a 1-bit mask's connected regions become objects.

    A bilevel (bool) mask says where objects are but not which pixel belongs to which: scored
    or trained as it is, all its objects would be one. Touching objects stay merged, so say so.
    """
    if mask.dtype != bool:
        return mask
    warnings.warn(
        f"napari-unet: {name} is a 1-bit mask: its connected regions are taken as the objects "
        "(touching objects count as one; save object ids, e.g. uint16, to keep them apart)",
        UserWarning,
        stacklevel=2,
    )
    return ndi.label(mask)[0]


def _checked(
    images: list[Any], masks: list[Any], names: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if not images:
        raise ValueError("no training images given")
    for array, name in [*zip(images, names, strict=True), *zip(masks, names, strict=True)]:
        if np.ma.isMaskedArray(array):
            raise ValueError(
                f"{name} (or its mask) is a masked array; fill it first (array.filled(value)), "
                "so that what the masked pixels hold is your choice"
            )
    images, masks = [np.asarray(image) for image in images], [np.asarray(mask) for mask in masks]
    for image, mask, name in zip(images, masks, names, strict=True):
        check_pair(image, mask, name)
    if len({mask.ndim for mask in masks}) > 1:
        raise ValueError("the masks mix 2D and 3D; train a 2D and a 3D model on separate sets")
    return images, masks


def check_pair(image: np.ndarray, mask: np.ndarray, name: str = "the image") -> None:
    """Refuse a pair that would train a broken model, with one line that names the problem.

    Images are numbers without NaN or infinity; masks hold non-negative integer labels and
    have the image's spatial shape (images are ``YX``, ``ZYX``, or either with colour last).
    """
    if image.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {image.dtype}; training needs integers or floats")
    if image.size == 0:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int(np.count_nonzero(~np.isfinite(image)))
        raise ValueError(
            f"{name} contains {bad} NaN or infinite values; replace them (e.g. np.nan_to_num) "
            "or crop them away before training"
        )
    if mask.dtype.kind not in "biu":
        raise ValueError(
            f"the mask of {name} has dtype {mask.dtype}; masks hold integer labels "
            "(cast whole-number masks with mask.astype(np.uint16))"
        )
    if (
        mask.ndim not in (2, 3)
        or image.shape[: mask.ndim] != mask.shape
        or image.ndim > mask.ndim + 1
    ):
        raise ValueError(
            f"{name} has shape {image.shape} but its mask has {mask.shape}; a mask must have "
            "the image's spatial shape (images are YX or ZYX, colour last as YXC)"
        )
    if mask.dtype.kind == "i" and mask.min() < 0:
        raise ValueError(f"the mask of {name} has negative values (down to {mask.min()})")


def semantic_class_count(masks: ArrayList, sparse: bool) -> int:
    """Classes that semantic masks ask for (value ``k``, or ``k - 1`` if sparse, is a class).

    Refuses values that would make an absurd number of output channels, naming them: they
    are usually object labels (train ``target="instances"``) or a 0/255 binary mask.
    """
    values = np.unique(np.concatenate([np.unique(mask) for mask in masks]))
    needed = max(2, int(values.max()) + (0 if sparse else 1))
    if needed > MAX_SEMANTIC_CLASSES:
        shown = ", ".join(str(v) for v in values[:6]) + (
            f", ..., {values[-1]}" if values.size > 6 else ""
        )
        raise ValueError(
            f"semantic masks hold class indices, but these hold {values.size} values ({shown}): "
            f"that is {needed} classes, more than {MAX_SEMANTIC_CLASSES}. For one label per "
            "object use target='instances'; for a 0/255 mask divide it by 255"
        )
    return needed


@dataclass
class LabelledImage:
    """One image, as given and as the network sees it, with its mask, classes and weights."""

    source: np.ndarray
    """The image as given: validation runs it through the Predictor, as users will."""
    axes: str
    image: np.ndarray
    """Channels matched and normalised as in prediction, float32 ``(C, *spatial)``."""
    mask: np.ndarray
    target: np.ndarray
    weights: np.ndarray | None
    foreground: np.ndarray
    """Flat indices of annotated non-background pixels (a subsample), for patch centres."""
    distance: np.ndarray | None = None
    """The regression target after the classes: the distance of distance models, the potential
    whose gradient is the flows of flows models (``None`` for other models)."""
    sparse: bool = False
    """Whether ``mask`` follows the sparse convention (0 not annotated; see ``targets``)."""

    @classmethod
    def build(
        cls,
        source: np.ndarray,
        mask: np.ndarray,
        description: ModelDescription,
        target: Target,
        sparse: bool,
        with_weights: bool,
    ) -> LabelledImage:
        """Normalise the image and compute the target (and the paper's weight map if asked)."""
        axes = training_axes(source, mask, description.spatial_dims)
        image = model_input(source, axes, description)
        if target == "instances":
            classes = instance_target(mask, sparse=sparse)
            objects = np.where(classes == 1, object_labels(mask, target, sparse), 0)
        else:
            classes = semantic_target(mask, sparse=sparse)
            objects = object_labels(mask, target, sparse)
        n_classes = description.architecture.out_channels
        weights = weight_map(classes, objects, n_classes=n_classes) if with_weights else None
        candidates = np.flatnonzero(classes >= (0 if sparse else 1))
        if candidates.size > 20_000:
            candidates = np.random.default_rng(0).choice(candidates, 20_000, replace=False)
        regression = REGRESSION_TARGETS.get(instance_source(description) or "")
        distance = regression(mask, sparse) if regression is not None else None
        return cls(source, axes, image, mask, classes, weights, candidates, distance, sparse)


REGRESSION_TARGETS = {"distance": center_distance, "flows": center_potential}
"""What each representation regresses after its classes, from an instance mask."""


def training_axes(image: np.ndarray, mask: np.ndarray, spatial_dims: int) -> str:
    """Axis letters of a training image: ``YX`` or ``ZYX``, with ``C`` last for colour."""
    if mask.ndim != spatial_dims:
        raise ValueError(
            f"the model is {spatial_dims}D but a mask has {mask.ndim} dims (shape {mask.shape})"
        )
    axes = "ZYX"[-spatial_dims:]
    return axes + "C" if image.ndim > mask.ndim else axes


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
        """One patch, padded where the image is smaller."""
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
        weights, distance = (
            None if array is None else _pad_to(array[box], self.patch_shape, "constant", 0)
            for array in (item.weights, item.distance)
        )
        return Sample(image, target, weights, distance)


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
