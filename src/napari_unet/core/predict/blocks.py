"""Blocks: the units of bounded-memory prediction, and the seams between them.

An image (one slice or one volume of it, an *item*) is cut into blocks. Each block owns its
*core*: the output pixels it writes. Post-processing sees the core plus a *halo* (so objects
near the core's edge are labelled as in a whole-image pass), and the network reads a *window*:
the core plus the network's receptive-field radius (and at least the halo), its start on the
pooling grid. A window edge is either the image border (treated exactly as a whole-image pass
treats it) or a receptive-field radius away from the core, so the core's logits equal a
whole-image pass: blocks have no seams to blend. The halo, inside that margin, sees most of its
receptive field: enough context for the watershed, at no extra network work.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_BLOCK_EDGE = 16
"""Smallest block core in Y and X a user may ask for: each block's window also reads the
network's receptive field around it, so smaller blocks read the image many times over."""


@dataclass(frozen=True)
class AxisGeometry:
    """What one spatial axis needs around a block: network context, pooling grid, halo."""

    context: int
    """Input pixels an output pixel depends on, per side (0 where the network does not run)."""
    multiple: int
    """Window starts are multiples of this (the pooling grid; 1 where the network does not run)."""
    halo: int
    """Output pixels of post-processing context per side of a core."""


@dataclass(frozen=True)
class Block:
    """One block of an item, in image pixel coordinates per spatial axis."""

    index: tuple[int, ...]
    core: tuple[slice, ...]
    region: tuple[slice, ...]
    window: tuple[slice, ...]

    def core_in_region(self) -> tuple[slice, ...]:
        """Return the core in coordinates of the region's array."""
        return _relative(self.core, self.region)

    def region_in_window(self) -> tuple[slice, ...]:
        """Return the region in coordinates of the window's array."""
        return _relative(self.region, self.window)

    @property
    def core_pixels(self) -> int:
        """Pixels (voxels) of the core."""
        return math.prod(part.stop - part.start for part in self.core)


@dataclass(frozen=True)
class Seam:
    """Where two neighbouring blocks meet: ``lower`` ends at ``position`` along ``axis``."""

    lower: tuple[int, ...]
    upper: tuple[int, ...]
    axis: int
    position: int


class BlockGrid:
    """Blocks of equal core shape (the last ones cut by the border) covering an item."""

    def __init__(
        self,
        shape: Sequence[int],
        core_shape: Sequence[int],
        geometry: Sequence[AxisGeometry],
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.core_shape = tuple(
            max(1, min(int(c), n)) for c, n in zip(core_shape, shape, strict=True)
        )
        self.geometry = tuple(geometry)
        self.counts = tuple(
            math.ceil(n / c) for n, c in zip(self.shape, self.core_shape, strict=True)
        )

    def __len__(self) -> int:
        return math.prod(self.counts)

    def blocks(self) -> list[Block]:
        """All blocks, in raster order."""
        return [self.block(index) for index in itertools.product(*map(range, self.counts))]

    def block(self, index: tuple[int, ...]) -> Block:
        """Return the block at grid position ``index``."""
        core, region, window = [], [], []
        for k, n, c, axis in zip(index, self.shape, self.core_shape, self.geometry, strict=True):
            start, stop = k * c, min(n, (k + 1) * c)
            low, high = max(0, start - axis.halo), min(n, stop + axis.halo)
            core.append(slice(start, stop))
            region.append(slice(low, high))
            reach = max(axis.context, axis.halo)  # the core's full receptive field, the halo
            window.append(_window(min(low, start - reach), max(high, stop + reach), n, axis))
        return Block(tuple(index), tuple(core), tuple(region), tuple(window))

    def seams(self) -> list[Seam]:
        """Every pair of blocks that share a face, with where the face lies."""
        seams = []
        for index in itertools.product(*map(range, self.counts)):
            for axis, count in enumerate(self.counts):
                if index[axis] + 1 < count:
                    upper = tuple(k + (a == axis) for a, k in enumerate(index))
                    position = upper[axis] * self.core_shape[axis]
                    seams.append(Seam(tuple(index), upper, axis, position))
        return seams


def seam_slab(block: Block, seam: Seam, width: int) -> tuple[slice, ...]:
    """Return the part of ``block``'s region within ``width`` of the seam, across its face.

    Both blocks of a seam return a slab of the same image pixels, labelled each by its own
    post-processing: comparing the two says which objects continue across the seam.
    """
    parts = []
    for axis, core in enumerate(block.core):
        if axis == seam.axis:
            parts.append(slice(seam.position - width, seam.position + width))
        else:
            parts.append(core)
    if any(p.start < r.start or p.stop > r.stop for p, r in zip(parts, block.region, strict=True)):
        raise ValueError(f"seam slab {parts} leaves block region {block.region}: halo too small")
    return _relative(tuple(parts), block.region)


def choose_core_shape(
    shape: Sequence[int],
    geometry: Sequence[AxisGeometry],
    region_pixels: int,
    window_pixels: float,
    network_axes: Sequence[bool],
    max_edge: int | None,
    max_core_pixels: int | None,
    align: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Return the largest equal-sized cores whose window fits the given budgets.

    Axes are split into more and more blocks, each time the axis whose split shrinks the window
    most for the least extra reading (so a 2D model's stack is cut along Z first); cores are
    multiples of ``align`` (e.g. the output's chunks, so blocks never share a chunk) and of the
    pooling grid. ``window_pixels`` bounds one window's network axes (one forward pass);
    ``region_pixels`` bounds the whole window (its logits and post-processing maps).
    """
    align = tuple(align) if align is not None else (1,) * len(shape)
    steps = [math.lcm(max(1, a), axis.multiple) for a, axis in zip(align, geometry, strict=True)]
    counts = [1] * len(shape)

    def cores(counts: list[int]) -> list[int]:
        return [
            min(n, _round_up(math.ceil(n / k), step))
            for n, k, step in zip(shape, counts, steps, strict=True)
        ]

    def reads_and_volume(counts: list[int]) -> tuple[float, int]:
        """Pixels all windows read per image pixel, and one window's pixels."""
        core = cores(counts)
        window = window_sides(core)
        blocks = [math.ceil(n / c) for n, c in zip(shape, core, strict=True)]
        reads = math.prod(b * w / n for b, w, n in zip(blocks, window, shape, strict=True))
        return reads, math.prod(window)

    def cost_of_splitting(axis: int) -> float:
        """Extra reading per halving of the window if ``axis`` gets one more block."""
        reads, volume = reads_and_volume(counts)
        trial = counts.copy()
        trial[axis] += 1
        reads_after, volume_after = reads_and_volume(trial)
        if volume_after >= volume:
            return math.inf
        return math.log(reads_after / reads) / math.log(volume / volume_after)

    def window_sides(core: list[int]) -> list[int]:
        return [
            min(n, c + 2 * max(axis.halo, axis.context))
            for n, c, axis in zip(shape, core, geometry, strict=True)
        ]

    smallest = window_sides(list(steps))
    if math.prod(w for w, net in zip(smallest, network_axes, strict=True) if net) > window_pixels:
        window_pixels = math.inf  # no window fits one forward pass: tiles inside it will
    while True:
        core = cores(counts)
        window = window_sides(core)
        network_window = math.prod(w for w, net in zip(window, network_axes, strict=True) if net)
        fits = (
            math.prod(window) <= region_pixels
            and network_window <= window_pixels
            and (max_edge is None or max(core) <= max_edge)
            and (max_core_pixels is None or math.prod(core) <= max_core_pixels)
        )
        splittable = [a for a in range(len(shape)) if core[a] > steps[a]]
        if fits or not splittable:
            return tuple(core)
        if max_edge is not None and max(core) > max_edge:
            splittable = [a for a in splittable if core[a] > max_edge]
        counts[min(splittable, key=lambda a: (cost_of_splitting(a), -core[a]))] += 1


def _window(low: int, high: int, length: int, axis: AxisGeometry) -> slice:
    start = 0 if low <= 0 else low // axis.multiple * axis.multiple
    return slice(start, min(_round_up(high, axis.multiple), length))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _relative(inner: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)
    )
