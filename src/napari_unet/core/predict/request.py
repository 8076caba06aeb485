"""One prediction request: an image checked against a model, and what it will produce.

Built once per image (:func:`build_request`), shared by every block and shipped to dask
workers: it holds a reference to the image, never its pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.axes import CanonicalView, normalize_axes
from napari_unet.core.models.model_types import Model
from napari_unet.core.normalize import Normalizer, check_dtype, fit_normalizer, model_channels
from napari_unet.core.predict.postprocess import instance_source
from napari_unet.names import OUTPUTS


@dataclass(frozen=True)
class Request:
    """One validated prediction: what to read, how to normalise it, what to produce."""

    view: CanonicalView
    channels: slice
    normalizer: Normalizer
    kind: str
    out_axes: str
    out_shape: tuple[int, ...]

    @property
    def times(self) -> int:
        """Time points: each is segmented on its own."""
        return self.view.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` lengths, 1 where the image lacks the axis."""
        _, _, z, y, x = self.view.shape
        return z, y, x


def build_request(
    model: Model,
    image: Any,
    axes: str | None,
    output: str = "labels",
    channel: int | None = None,
    check: Callable[[tuple[int, ...], str], None] | None = None,
) -> Request:
    """Check the image against the model; compute the normalisation once for the whole image.

    ``check(spatial_shape, kind)`` runs the caller's own checks before any pixel is read.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; not {output!r}")
    if np.ma.isMaskedArray(image):
        raise ValueError(
            "the image is a masked array; fill its masked pixels first "
            "(image.filled(value)), so that what they hold is your choice"
        )
    description = model.description
    shape = tuple(int(n) for n in image.shape)
    check_dtype(np.dtype(image.dtype))
    axes = normalize_axes(axes, shape, description)
    view, channels = model_channels(CanonicalView(image, axes), axes, description, channel)
    if description.spatial_dims == 3 and "Z" not in axes:
        raise ValueError(
            f"model {description.name!r} is 3D but the image (shape {shape}, axes {axes}) "
            "has no Z axis"
        )
    if 0 in shape:
        raise ValueError(f"the image is empty: shape {shape}")
    kind = description.output_kind if output == "labels" else output
    if kind == "instances" and instance_source(description) is None:
        raise ValueError(
            f"model {model.name!r} predicts {description.architecture.out_channels} "
            "classes; instance labels need 3 (background, interior, boundary) or a "
            "'membrane' class: use output='semantic'"
        )
    plain_axes = axes.replace("C", "")
    out_axes = "C" + plain_axes if kind == "probabilities" else plain_axes
    sizes = dict(zip(axes, shape, strict=True))
    sizes["C"] = description.architecture.out_channels
    out_shape = tuple(sizes[letter] for letter in out_axes)
    if check is not None:
        check(view.shape[2:], kind)
    normalizer = fit_normalizer(view, description.normalization, channels)
    return Request(view, channels, normalizer, kind, out_axes, out_shape)
