"""Where a napari layer sits in the world and what its axes are, in the engine's letters.

Results copy their image's placement, so a segmentation lies exactly over its image; files
place their layers by their pixel size. Neither Qt nor the engine is needed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_unet.core.io import ImageFile

Mode = Literal["2D", "3D"]

SPATIAL_AXES = "TZYX"
"""Axis letters a napari layer can carry (channels are split off or kept as RGB)."""


@dataclass(frozen=True)
class Placement:
    """Where a layer sits in the world: napari's data-to-world transform, plus axis names.

    Results copy their image's placement, so a segmentation lies exactly over its image.
    """

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    affine: np.ndarray
    axis_labels: tuple[str, ...]
    units: tuple[str, ...]

    def meta(self) -> dict[str, Any]:
        """Return the layer keyword arguments for this placement."""
        return {
            "scale": self.scale,
            "translate": self.translate,
            "affine": self.affine,
            "axis_labels": self.axis_labels,
            "units": self.units,
        }

    def with_leading_axis(self, label: str) -> Placement:
        """Place a result that has one extra, unscaled axis in front (the classes)."""
        affine = np.eye(self.affine.shape[0] + 1)
        affine[1:, 1:] = self.affine
        return Placement(
            (1.0, *self.scale),
            (0.0, *self.translate),
            affine,
            (label, *self.axis_labels),
            ("pixel", *self.units),
        )


def file_placement(image: ImageFile) -> Placement:
    """Place a file: its pixel sizes (micrometres) as scale, its axes as axis labels."""
    axes = image.axes.upper().replace("C", "")
    sizes = image.pixel_size_um
    return Placement(
        scale=tuple(float(sizes.get(axis, 1.0)) for axis in axes),
        translate=(0.0,) * len(axes),
        affine=np.eye(len(axes) + 1),
        axis_labels=tuple(axis.lower() for axis in axes),
        units=tuple("micrometer" if axis in sizes else "pixel" for axis in axes),
    )


def axes_from_labels(axis_labels: Sequence[str], ndim: int) -> str:
    """Read axis letters from a layer's axis labels when they are ours (``z``, ``y``, ``x``...).

    Other labels (napari's default ``-2``, ``-1``) give Y and X last with Z, then T, before.
    """
    letters = "".join(str(label).upper() for label in axis_labels)
    if len(letters) == ndim and len(set(letters)) == ndim and set(letters) <= set(SPATIAL_AXES):
        if letters.endswith("YX"):
            return letters
    if ndim > len(SPATIAL_AXES):
        raise ValueError(f"data with {ndim} axes is not supported; at most 4 (TZYX)")
    return SPATIAL_AXES[-ndim:]


def layer_axes(layer: Image, mode: Mode | None = None) -> str:
    """Name the axes of a layer's data for the engine, e.g. ``"ZYX"`` or ``"TYXC"``.

    ``mode="2D"`` turns Z into T, so that every plane is segmented on its own (a 2D model on
    Z finds objects in 3D); ``mode="3D"`` makes the axis before Y a Z axis.
    """
    letters = axes_from_labels(layer.axis_labels, layer.ndim)
    if mode == "2D" and "Z" in letters and "T" not in letters:
        letters = letters.replace("Z", "T")
    elif mode == "3D" and layer.ndim >= 3 and "Z" not in letters:
        letters = letters[:-3] + "ZYX"
    return letters + ("C" if layer.rgb else "")


def _level_factors(layer: Image, level: int) -> np.ndarray:
    """How many full-resolution pixels one pixel of ``level`` spans, per axis."""
    if not layer.multiscale:
        return np.ones(layer.ndim)
    full, coarse = layer.data[0].shape, layer.data[level].shape
    return np.array([f / c for f, c in zip(full[: layer.ndim], coarse[: layer.ndim], strict=True)])


def layer_placement(layer: Image, level: int) -> Placement:
    """Place a result of ``level`` of ``layer`` over the layer (coarser levels scale up)."""
    return Placement(
        scale=tuple(np.asarray(layer.scale) * _level_factors(layer, level)),
        translate=tuple(float(t) for t in layer.translate),
        affine=np.asarray(layer.affine.affine_matrix),
        axis_labels=tuple(layer.axis_labels),
        units=tuple(str(unit) for unit in layer.units),
    )


def plane_through(
    layer: Image,
    data: Any,
    axes: str,
    placement: Placement,
    level: int,
    position: Sequence[float],
) -> tuple[Any, Placement]:
    """Keep one index along each axis the model does not see, and shift the placement there.

    The kept axes stay (with length 1) so the result still has the image's dimensions and
    lands on the right slice.
    """
    factors = _level_factors(layer, level)
    full_index = np.asarray(layer.world_to_data(position))
    index = [slice(None)] * data.ndim
    translate = list(placement.translate)
    for axis, letter in enumerate(axes.replace("C", "")):
        if letter == "T":
            at = int(np.clip(round(full_index[axis] / factors[axis]), 0, data.shape[axis] - 1))
            index[axis] = slice(at, at + 1)
            translate[axis] += at * placement.scale[axis]
    return data[tuple(index)], replace(placement, translate=tuple(translate))
