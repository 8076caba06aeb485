"""What the network sees: the image's channels matched to the model, normalised per the card.

Training and prediction both go through here, so a model sees in use exactly what it saw in
training. Statistics come from the whole image (a strided sample of at most ``MAX_SAMPLES``
pixels per channel for big or lazy inputs), so every tile and every slice is scaled the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.core.axes import CanonicalView, match_channels

if TYPE_CHECKING:
    from napari_unet.core.models.registry import ModelDescription

MAX_SAMPLES = 2**22
"""Pixels per channel the statistics are computed from; a strided sample of larger images."""

KINDS = ("percentile", "minmax", "meanstd", "none")


@dataclass(frozen=True)
class Normalizer:
    """``(x - shift) * scale`` per channel, in float32."""

    shift: np.ndarray
    scale: np.ndarray

    def __call__(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalise a block with channels on axis 1 (``(T, C, ...)`` or ``(1, C, ...)``).

        ``out`` (float32, the block's shape) receives the result without another copy.
        """
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise ValueError(_NOT_FINITE)
        shape = (1, -1) + (1,) * (block.ndim - 2)
        out = np.subtract(block, self.shift.reshape(shape), out=out, dtype=np.float32)
        out *= self.scale.reshape(shape)
        return out


_NOT_FINITE = "the image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first"


def check_dtype(dtype: np.dtype) -> None:
    """Reject dtypes that are not numbers (bool is fine: it is 0/1)."""
    if dtype.kind not in "biuf":
        raise ValueError(f"cannot segment an image of dtype {dtype}; expected integers or floats")


def fit_normalizer(view: CanonicalView, settings: dict[str, Any], channels: slice) -> Normalizer:
    """Compute the per-channel shift and scale that ``settings`` (the model card's) ask for."""
    kind = settings.get("kind", "percentile")
    if kind not in KINDS:
        raise ValueError(f"unknown normalisation {kind!r} in the model card; known: {KINDS}")
    sample = _sample(view, channels)
    if sample.dtype.kind == "f" and not np.isfinite(sample).all():
        raise ValueError(_NOT_FINITE)
    n_channels = sample.shape[1]
    per_channel = np.moveaxis(sample, 1, 0).reshape(n_channels, -1).astype(np.float64)
    if kind == "none":
        shift, spread = np.zeros(n_channels), np.ones(n_channels)
    elif kind == "meanstd":
        shift, spread = per_channel.mean(axis=1), per_channel.std(axis=1)
    else:
        low, high = (0.0, 100.0) if kind == "minmax" else (settings["low"], settings["high"])
        shift, top = np.percentile(per_channel, [low, high], axis=1)
        spread = top - shift
    # A constant image has no spread: keep its values as they are rather than dividing by 0.
    scale = np.where(spread > 0, 1.0 / np.where(spread > 0, spread, 1.0), 1.0)
    if settings.get("dark_background") and kind == "percentile":
        # Mostly bright images (stained tissue, brightfield) are flipped to bright objects on
        # a dark background, in training and in use alike.
        bright = (np.median(per_channel, axis=1) - shift) * scale > 0.5
        shift, scale = np.where(bright, top, shift), np.where(bright, -scale, scale)
    return Normalizer(shift.astype(np.float32), scale.astype(np.float32))


def model_channels(
    view: CanonicalView, axes: str, description: ModelDescription, channel: int | None = None
) -> tuple[CanonicalView, slice]:
    """Match an image's channels to what the model card expects (see ``match_channels``)."""
    return match_channels(
        view,
        axes,
        channel,
        description.in_channels,
        description.normalization.get("rgb", "mean"),
        description.name,
    )


def model_input(
    image: np.ndarray, axes: str, description: ModelDescription, channel: int | None = None
) -> np.ndarray:
    """Return the whole image as the network sees it: float32 ``(C, *spatial)``.

    Training prepares its images with this; prediction reads the same values tile by tile.
    """
    check_dtype(np.dtype(image.dtype))
    view, channels = model_channels(CanonicalView(image, axes), axes, description, channel)
    normalizer = fit_normalizer(view, description.normalization, channels)
    block = view.read((slice(None), channels, slice(None), slice(None), slice(None)))
    normalized = normalizer(block)
    spatial = normalized.shape[-description.spatial_dims :]
    return normalized.reshape(normalized.shape[1], *spatial)


def _sample(view: CanonicalView, channels: slice) -> np.ndarray:
    """Read a strided sample of every channel, at most about ``MAX_SAMPLES`` pixels each."""
    t, _, z, y, x = view.shape
    total = t * z * y * x
    long_axes = max(1, sum(n > 1 for n in (t, z, y, x)))
    stride = max(1, math.ceil((total / MAX_SAMPLES) ** (1 / long_axes)))
    steps = [stride if n > 1 else 1 for n in (t, z, y, x)]
    block = (slice(None, None, steps[0]), channels, *(slice(None, None, s) for s in steps[1:]))
    return view.read(block)
