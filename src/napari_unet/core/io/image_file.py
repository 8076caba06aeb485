"""What every image format gives and needs: the :class:`ImageFile`, and labels' smallest dtype.

TIFF (:mod:`.images`) and OME-Zarr (:mod:`.omezarr`) both build on this module,
which imports neither, so the two formats do not import each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ImageFile:
    """An image file's pixels with what we know of its geometry."""

    data: Any
    """numpy array, or a lazy array (numpy memmap or zarr) for large files."""
    axes: str
    """Letters from ``TZCYX``, one per dimension of ``data``."""
    pixel_size_um: dict[str, float] = field(default_factory=dict)
    """Pixel size in micrometres for the axes where the file says it (e.g. ``{"Y": 0.5}``)."""
    is_labels: bool = False
    """Whether the file is a label image written by :func:`write_labels`."""
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape."""
        return tuple(self.data.shape)


CHUNK_SIDE_2D, CHUNK_SIDE_3D, CHUNK_DEPTH = 1024, 256, 16
"""About a million pixels a chunk: 1024x1024 planes, or 16x256x256 blocks in 3D."""


def default_chunks(
    shape: Sequence[int], axes: str, *, whole_channels: bool = False, planes: bool = False
) -> tuple[int, ...]:
    """Return the chunks of an array we create: about a million pixels each.

    T is one chunk per time point; C one per channel, or all channels together
    (``whole_channels``, e.g. probabilities written per block); Z 16 slices with 256x256 in Y
    and X, or with ``planes`` (arrays streamed into a TIFF plane by plane) one slice of
    1024x1024.
    """
    volume = "Z" in axes and not planes
    side = CHUNK_SIDE_3D if volume else CHUNK_SIDE_2D
    sizes = {"T": 1, "C": 1, "Z": 1 if planes else CHUNK_DEPTH, "Y": side, "X": side}
    return tuple(
        int(n) if letter == "C" and whole_channels else min(int(n), sizes[letter])
        for letter, n in zip(axes, shape, strict=True)
    )


def smallest_label_dtype(labels: Any) -> np.dtype:
    """Return the smallest unsigned integer dtype that holds every label (labels must be >= 0)."""
    array = np.asarray(labels)
    if array.size == 0:
        return np.dtype(np.uint8)
    if array.dtype.kind == "b":
        return np.dtype(np.uint8)
    if array.dtype.kind not in "iu" and not np.array_equal(array, np.round(array)):
        raise ValueError(f"labels must be whole numbers, got dtype {array.dtype}")
    low, high = array.min(), array.max()
    if low < 0:
        raise ValueError(f"labels must be >= 0, found {low}")
    dtype = np.min_scalar_type(int(high))
    if dtype.kind != "u":
        raise ValueError(f"label {high} is too large for any unsigned integer type")
    return dtype


def smallest_label_dtype_of(labels: Any, regions: Iterable[tuple[Any, ...]]) -> np.dtype:
    """Return :func:`smallest_label_dtype` of a lazy array, read one region at a time."""
    return reduce(
        np.promote_types,
        (smallest_label_dtype(np.asarray(labels[region])) for region in regions),
        np.dtype(np.uint8),
    )
