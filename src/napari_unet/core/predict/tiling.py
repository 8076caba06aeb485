"""Tile grids for sliding-window prediction: where tiles go and how their outputs are blended.

Each spatial axis is planned on its own and tiles are the Cartesian product of the axis plans.
Tile starts are multiples of the network's pooling factor, so every tile sees the same pooling
grid as an untiled pass; a tile drops ``halo`` output pixels on each side that faces another
tile (those pixels saw the tile's zero padding instead of the image) and the next pixels,
shared with the neighbour, are blended with a raised-cosine ramp. The ramps of two neighbours
add up to one, so the blended result needs no weight normalisation and a constant prediction
stays exactly constant: no seams. With ``halo`` at least the receptive-field radius, the tiled
result equals an untiled pass.

Image borders are mirrored (reflected) wherever a tile reaches past them: a ``"valid"`` network
gets the context it consumes, and every tile is a length the network accepts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np


class NetworkGeometry(Protocol):
    """What tiling needs of a network: its receptive field, pooling grid and size rules."""

    @property
    def context(self) -> int:
        """Input pixels per side an output pixel depends on (receptive-field radius)."""

    @property
    def size_multiple(self) -> int:
        """Pooling grid: ``"same"`` input lengths are multiples of it."""

    @property
    def same_padding(self) -> bool:
        """Whether outputs have the input's size."""

    def valid_input_size(self, min_size: int) -> int:
        """Smallest accepted input length at least ``min_size``."""

    def output_size(self, input_size: int) -> int:
        """Output length for an accepted input length."""

    def output_size_or_none(self, input_size: int) -> int | None:
        """Output length, or ``None`` for an input length the network does not accept."""


@dataclass(frozen=True)
class AxisPlan:
    """Tiles along one axis, in image pixel coordinates.

    Tile ``k`` predicts output pixels ``[starts[k], starts[k] + tile_out)`` from input pixels
    ``[starts[k] - offset, starts[k] - offset + tile_in)``; positions outside ``[0, length)``
    are mirrored image pixels.
    """

    length: int
    starts: tuple[int, ...]
    tile_in: int
    tile_out: int
    halo: int

    @property
    def offset(self) -> int:
        """Input pixels a ``"valid"`` network consumes on each side (0 for ``"same"``)."""
        return (self.tile_in - self.tile_out) // 2

    def window(self, k: int) -> np.ndarray:
        """Blending weights of tile ``k``'s output; over all tiles they add up to 1 everywhere."""
        return self._windows[k]

    @cached_property
    def _windows(self) -> list[np.ndarray]:
        """Each tile's ramps (0 on halos, a raised cosine, then 1), divided by their sum.

        Dividing along one axis is cheap, and products of 1D partitions of unity are one in
        any dimension, so no image-sized weight sum is ever needed.
        """
        raw = []
        for k in range(len(self.starts)):
            weights = np.ones(self.tile_out, np.float64)
            if k > 0:
                ramp = self._ramp(self.starts[k - 1] + self.tile_out - self.starts[k])
                weights[: ramp.size] = ramp
            if k < len(self.starts) - 1:
                ramp = self._ramp(self.starts[k] + self.tile_out - self.starts[k + 1])
                weights[self.tile_out - ramp.size :] *= ramp[::-1]
            raw.append(weights)
        total = np.zeros(self.starts[-1] + self.tile_out)
        for start, weights in zip(self.starts, raw, strict=True):
            total[start : start + self.tile_out] += weights
        return [
            (weights / total[start : start + self.tile_out]).astype(np.float32)
            for start, weights in zip(self.starts, raw, strict=True)
        ]

    def _ramp(self, overlap: int) -> np.ndarray:
        """Weights rising from 0 to 1 across ``overlap`` shared pixels; mirrored, they sum to 1."""
        halo = min(self.halo, overlap // 2)
        blend = overlap - 2 * halo
        ramp = np.zeros(overlap)
        ramp[halo : halo + blend] = np.sin(0.5 * np.pi * (np.arange(blend) + 0.5) / blend) ** 2
        ramp[halo + blend :] = 1.0
        return ramp


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Map pixel positions outside ``[0, length)`` onto the image by mirroring at its borders."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.abs(index) % period
    return np.where(index >= length, period - index, index)


def plan_axis(
    network: NetworkGeometry, length: int, max_tile_in: int, overlap: int, halo: int
) -> AxisPlan:
    """Plan tiles along an axis of ``length`` pixels, tiles at most ``max_tile_in`` long.

    Neighbouring tiles share at least ``overlap`` output pixels; the tile length is the
    smallest one that needs no more tiles than the largest allowed, so no work is wasted.
    For a ``"same"`` network the last tile ends where a single tile would (the length
    rounded up to the pooling factor), so tiling never changes what the image border sees.
    """
    same = network.same_padding
    context = 0 if same else network.context
    single = network.valid_input_size(length + 2 * context)
    multiple = network.size_multiple
    extent = single if same else length

    def count(tile_in: int) -> tuple[int, int] | None:
        tile_out = network.output_size(tile_in)
        step = (tile_out - overlap) // multiple * multiple
        if step < multiple or 2 * step < tile_out:
            return None
        return math.ceil((extent - tile_out) / step) + 1, step

    tile_in = network.valid_input_size(max(1, max_tile_in - multiple + 1))
    if tile_in > max_tile_in and network.output_size_or_none(tile_in - multiple):
        tile_in -= multiple
    while tile_in < single and count(tile_in) is None:
        tile_in += multiple  # a tile too small for the overlap: grow it, memory permitting
    if tile_in >= single:
        return AxisPlan(length, (0,), single, network.output_size(single), halo)
    tiles, step = count(tile_in)  # type: ignore[misc]
    while network.output_size_or_none(tile_in - multiple):
        smaller = count(tile_in - multiple)
        if smaller is None or smaller[0] > tiles:
            break
        tile_in -= multiple
        tiles, step = smaller
    starts = [k * step for k in range(tiles)]
    if same:
        starts[-1] = extent - tile_in
    return AxisPlan(length, tuple(starts), tile_in, network.output_size(tile_in), halo)


@dataclass(frozen=True)
class Tile:
    """One tile: where its input comes from and where its (cropped, weighted) output goes."""

    index: tuple[int, ...]
    source: tuple[np.ndarray | slice, ...]
    """Per axis, the image pixels to read: a slice, or indices where the tile is mirrored."""
    target: tuple[slice, ...]
    """Per axis, the output pixels this tile writes, inside the image."""
    crop: tuple[slice, ...]
    """Per axis, the part of the tile's output that lands on ``target``."""


class TileGrid:
    """The tiles covering an image of one spatial shape, with their blending windows."""

    def __init__(self, plans: Sequence[AxisPlan]) -> None:
        self.plans = tuple(plans)
        self._windows = [[plan.window(k) for k in range(len(plan.starts))] for plan in plans]

    @property
    def tile_shape(self) -> tuple[int, ...]:
        """The network input shape of every tile."""
        return tuple(plan.tile_in for plan in self.plans)

    def __len__(self) -> int:
        return math.prod(len(plan.starts) for plan in self.plans)

    @property
    def single(self) -> bool:
        """Whether one tile covers the whole image (nothing to blend)."""
        return len(self) == 1

    def tiles(self) -> Iterator[Tile]:
        """All tiles, in raster order."""
        per_axis = [[_axis_part(plan, k) for k in range(len(plan.starts))] for plan in self.plans]
        for index in itertools.product(*(range(len(p.starts)) for p in self.plans)):
            parts = [per_axis[axis][k] for axis, k in enumerate(index)]
            yield Tile(
                index=index,
                source=tuple(part[0] for part in parts),
                target=tuple(part[1] for part in parts),
                crop=tuple(part[2] for part in parts),
            )

    def weights(self, tile: Tile) -> np.ndarray | None:
        """Return the blending weights over the tile's cropped output; ``None`` if all 1."""
        if self.single:
            return None
        windows = [
            self._windows[axis][k][crop]
            for axis, (k, crop) in enumerate(zip(tile.index, tile.crop, strict=True))
        ]
        if all(window.min() == 1.0 for window in windows):
            return None
        weights = windows[0]
        for window in windows[1:]:
            weights = np.multiply.outer(weights, window)
        return weights


def _axis_part(plan: AxisPlan, k: int) -> tuple[np.ndarray | slice, slice, slice]:
    first = plan.starts[k] - plan.offset
    positions = np.arange(first, first + plan.tile_in)
    if first >= 0 and first + plan.tile_in <= plan.length:
        source: np.ndarray | slice = slice(first, first + plan.tile_in)
    else:
        source = reflect_index(positions, plan.length)
    start = plan.starts[k]
    stop = min(start + plan.tile_out, plan.length)
    return source, slice(start, stop), slice(0, stop - start)
