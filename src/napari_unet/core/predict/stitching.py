"""Join per-block object labels into one label image: unique ids, objects merged across seams.

Each block numbers its objects 1..n on its own. Where two blocks meet, both labelled the same
slab of pixels around the seam (their halos overlap); a label of one block and a label of the
other that cover mostly the same pixels there are one object. A union-find over all
``(block, label)`` pairs merges them, objects smaller than the model's minimum size (counted
over the whole image, after merging) are dropped, and the rest are numbered 1..N. The result is
one lookup table per block, applied when its labels are written out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MATCH_SHARE = 0.5
"""Two labels are one object when they share at least this share of the smaller one's slab
pixels."""


@dataclass
class BlockLabels:
    """What a block's post-processing reports for stitching (no pixels of its core)."""

    index: tuple[int, ...]
    """The block's position in its grid."""
    count: int
    """Labels 1..count were used."""
    sizes: np.ndarray
    """Core pixels per label, index 0 unused (``count + 1`` entries)."""
    slabs: dict[int, np.ndarray] = field(default_factory=dict)
    """Labels on the slab around each seam the block takes part in, keyed by seam number."""


def merge_tables(
    keys: list[tuple[int, ...]],
    results: dict[tuple[int, ...], BlockLabels],
    seams: list[tuple[tuple[int, ...], tuple[int, ...]]],
    min_size: int,
) -> tuple[dict[tuple[int, ...], np.ndarray], int]:
    """Per-block lookup tables (local label -> final label) and the number of objects.

    ``seams[k]`` names the lower and upper block of seam ``k``; both blocks' ``slabs[k]`` hold
    their labels on the same pixels.
    """
    offsets, total = {}, 0
    for key in keys:
        offsets[key] = total
        total += results[key].count
    parent = np.arange(total, dtype=np.int64)
    for number, (lower, upper) in enumerate(seams):
        pairs = _matching_pairs(results[lower].slabs[number], results[upper].slabs[number])
        for a, b in pairs:
            _union(parent, offsets[lower] + a - 1, offsets[upper] + b - 1)
    roots = np.array([_find(parent, node) for node in range(total)], dtype=np.int64)
    sizes = np.zeros(total, np.int64)
    for key in keys:
        sizes[offsets[key] : offsets[key] + results[key].count] = results[key].sizes[1:]
    root_sizes = np.bincount(roots, weights=sizes, minlength=total) if total else sizes
    kept = root_sizes >= max(1, min_size)
    final = np.zeros(total, np.int64)
    order = np.unique(roots[kept[roots]]) if total else np.zeros(0, np.int64)
    final[order] = np.arange(1, order.size + 1)
    tables = {}
    for key in keys:
        table = np.zeros(results[key].count + 1, np.int64)
        nodes = np.arange(offsets[key], offsets[key] + results[key].count)
        table[1:] = final[roots[nodes]]
        tables[key] = table
    return tables, int(order.size)


@dataclass(frozen=True)
class Overlaps:
    """Which labels of two label images of the same pixels share pixels, and how many."""

    pairs: np.ndarray
    """``(2, N)``: a label of the first image over a label of the second."""
    shared: np.ndarray
    """Pixels each pair shares."""
    sizes_first: np.ndarray
    """Pixels of each label of the first image (by label)."""
    sizes_second: np.ndarray

    @classmethod
    def of(cls, first: np.ndarray, second: np.ndarray) -> Overlaps | None:
        """Return the overlaps of ``first`` and ``second``, or ``None`` where no objects meet."""
        both = (first > 0) & (second > 0)
        if not both.any():
            return None
        a, b = first[both].astype(np.int64), second[both].astype(np.int64)
        pairs, shared = np.unique(np.stack([a, b]), axis=1, return_counts=True)
        sizes = [np.bincount(image.ravel().astype(np.int64)) for image in (first, second)]
        return cls(pairs, shared, *sizes)

    def iou(self) -> np.ndarray:
        """Intersection over union of each pair."""
        union = self.sizes_first[self.pairs[0]] + self.sizes_second[self.pairs[1]] - self.shared
        return self.shared / union


def _matching_pairs(lower: np.ndarray, upper: np.ndarray) -> list[tuple[int, int]]:
    """Label pairs (lower's, upper's) that cover mostly the same pixels of a shared slab."""
    overlaps = Overlaps.of(lower, upper)
    if overlaps is None:
        return []
    pairs, shared = overlaps.pairs, overlaps.shared
    smaller = np.minimum(overlaps.sizes_first[pairs[0]], overlaps.sizes_second[pairs[1]])
    keep = shared >= MATCH_SHARE * smaller
    return [(int(x), int(y)) for x, y in pairs[:, keep].T]


def _find(parent: np.ndarray, node: int) -> int:
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:
        parent[node], node = root, parent[node]
    return int(root)


def _union(parent: np.ndarray, a: int, b: int) -> None:
    root_a, root_b = _find(parent, a), _find(parent, b)
    if root_a != root_b:
        parent[max(root_a, root_b)] = min(root_a, root_b)
