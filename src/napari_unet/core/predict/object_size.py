"""Object size: segment at the scale the model was trained at, and bring the labels back.

A U-Net learns objects of the sizes it saw: nuclei three times larger than in training are cut
into pieces. When the caller gives the objects' typical ``diameter`` (pixels) and the model card
gives its training object size (``object_diameter_px``), the image is resampled by their ratio,
lazily, tile by tile as the engine reads it (bilinear, so a huge or lazy input is never copied
whole), and the result comes back to the image's own grid by nearest neighbour, so labels stay
labels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.core.axes import normalize_axes

if TYPE_CHECKING:
    from napari_unet.core.models.registry import ModelDescription
    from napari_unet.core.predict.engine import Engine

MIN_OUTPUT_SIDE = 8
"""A rescaled image keeps at least this many pixels per axis."""


def rescale_factor(diameter: float, description: ModelDescription) -> float:
    """Return how much to enlarge the image so its objects get the model's training size.

    Raises ``ValueError`` for a diameter that is not a positive number or a model whose card
    does not state its training object size.
    """
    if not (isinstance(diameter, int | float) and math.isfinite(diameter) and diameter > 0):
        raise ValueError(f"diameter must be a positive number of pixels, not {diameter!r}")
    trained = getattr(description, "object_diameter_px", None)
    if not trained:
        raise ValueError(
            f"model {description.name!r} does not state the object size it was trained at "
            "(object_diameter_px on its card), so a diameter cannot be used with it"
        )
    return float(trained) / float(diameter)


def rescaled_axes(axes: str, spatial_dims: int) -> str:
    """Return the axes to resample: Y and X, and Z too for a 3D model."""
    return "ZYX" if spatial_dims == 3 and "Z" in axes else "YX"


class ResampledArray:
    """A lazy, bilinearly resampled view of an array: ``view[block]`` reads only what it needs.

    ``factors`` maps axis positions to zoom factors. Output pixel ``i`` samples the source at
    ``(i + 0.5) / factor - 0.5`` (pixel centres aligned, as in ``skimage.transform.resize``),
    so any two reads agree on the pixels they share and tiles stitch exactly.
    """

    def __init__(self, source: Any, factors: dict[int, float]) -> None:
        self.source = source
        self.factors = factors
        self.dtype = np.dtype(np.float32)
        self.shape = tuple(
            max(MIN_OUTPUT_SIDE, round(n * factors[axis])) if axis in factors else int(n)
            for axis, n in enumerate(source.shape)
        )
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        """Read a block given as one int or slice per axis (trailing axes may be left out)."""
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        source_index, plans, drop = [], [], []
        for axis, item in enumerate(index):
            if isinstance(item, int | np.integer):
                drop.append(axis)
                item = slice(int(item), int(item) + 1)
            if axis not in self.factors:
                source_index.append(item)
                continue
            wanted = np.arange(self.shape[axis])[item]
            plan = _linear_plan(wanted, self.source.shape[axis], self.shape[axis])
            source_index.append(slice(plan[0], plan[1]))
            plans.append((axis, plan))
        block = np.asarray(self.source[tuple(source_index)], dtype=np.float32)
        for axis, (start, _, low, high, weight) in plans:
            shape = [1] * block.ndim
            shape[axis] = -1
            lower = np.take(block, low - start, axis=axis)
            upper = np.take(block, high - start, axis=axis)
            block = lower + (upper - lower) * weight.reshape(shape)
        return block.squeeze(axis=tuple(drop)) if drop else block


def _linear_plan(
    wanted: np.ndarray, source_length: int, output_length: int
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Source range to read, and the two neighbours and weight of each wanted output pixel."""
    scale = source_length / output_length
    position = np.clip((wanted + 0.5) * scale - 0.5, 0, source_length - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, source_length - 1)
    weight = (position - low).astype(np.float32)
    start = int(low.min()) if low.size else 0
    stop = int(high.max()) + 1 if high.size else 0
    return start, stop, low, high, weight


def nearest_back(result: np.ndarray, axes: dict[int, int]) -> np.ndarray:
    """Bring a resampled result back to its original lengths, by nearest neighbour.

    ``axes`` maps axis positions to original lengths; labels keep their values.
    """
    for axis, length in axes.items():
        scale = result.shape[axis] / length
        take = np.minimum(
            ((np.arange(length) + 0.5) * scale).astype(np.int64), result.shape[axis] - 1
        )
        result = np.take(result, take, axis=axis)
    return result


def predict_at_object_size(
    engine: Engine,
    image: Any,
    axes: str | None,
    diameter: float,
    output: str = "labels",
    out: Any = None,
    **options: Any,
) -> Any:
    """Run the engine on the image resampled to the model's object size.

    The result (labels or probabilities) comes back on the image's own grid, into ``out`` when
    given. The resampled result is held in memory; a cluster ``client`` cannot read the
    resampled view, so it is refused.
    """
    description = engine.model.description
    if options.get("client") is not None:
        raise ValueError("diameter cannot be combined with a dask client; rescale the image first")
    factor = rescale_factor(diameter, description)
    axes = normalize_axes(axes, tuple(int(n) for n in image.shape), description)
    scaled = rescaled_axes(axes, description.spatial_dims)
    factors = {axes.index(letter): factor for letter in scaled}
    request = engine.request(ResampledArray(image, factors), axes, output, options.get("channel"))
    result = engine.run(request, options.get("progress"), options.get("cancel"))
    kind = description.output_kind if output == "labels" else output
    output_axes = ("C" if kind == "probabilities" else "") + axes.replace("C", "")
    lengths = {output_axes.index(letter): int(image.shape[axes.index(letter)]) for letter in scaled}
    restored = nearest_back(np.asarray(result), lengths)
    if out is None:
        return restored
    out[...] = restored
    return out
