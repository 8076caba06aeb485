"""Join a 2D model's per-slice objects into 3D objects by their overlap from slice to slice.

A 2D model sees each slice on its own, so its objects are 2D. Joining them by 3D connectivity
fuses distinct cells wherever their interiors touch across slices: on serial-section EM, thin
and slightly shifted membranes let every cell touch a neighbour somewhere, and one object ends
up holding nearly all the foreground. So objects are labelled per slice, then an object
*continues* into the next slice when the two are each other's best match and their
intersection over union is at least :data:`JOIN_MIN_IOU`; otherwise the next slice's object
starts a new one (as cellpose's stitching does, but one-to-one: an object never absorbs two
of the next slice's). Each slice thus keeps exactly its 2D objects, and a 3D object is a chain
of 2D objects, one per slice. Whether two slices' objects join depends on those two slices
only, so blocks that share slices join them alike and seams merge them exactly.
"""

from __future__ import annotations

import numpy as np

from napari_unet.core.predict.stitching import Overlaps

JOIN_MIN_IOU = 0.25
"""Intersection over union two objects of neighbouring slices need to be one object."""


def join_slices(labels: np.ndarray, min_iou: float = JOIN_MIN_IOU) -> np.ndarray:
    """Return ``(Z, Y, X)`` per-slice labels numbered as 3D objects, 1..N (uint32).

    ``labels`` holds each slice's objects (their ids need not differ between slices); 0 is
    background and stays 0. Objects are numbered in order of their first slice.
    """
    if labels.ndim != 3:
        raise ValueError(f"join_slices needs (Z, Y, X) labels, got {labels.ndim} dimensions")
    joined = np.zeros(labels.shape, np.uint32)
    previous: np.ndarray | None = None
    previous_ids = np.zeros(1, np.int64)
    count = 0
    for z, plane in enumerate(labels):
        plane = plane.astype(np.int64, copy=False)
        ids = np.zeros(int(plane.max(initial=0)) + 1, np.int64)
        present = np.flatnonzero(np.bincount(plane.ravel(), minlength=ids.size))
        present = present[present > 0]
        if previous is not None:
            for old, new in continuing_pairs(previous, plane, min_iou):
                ids[new] = previous_ids[old]
        starts = present[ids[present] == 0]
        ids[starts] = np.arange(count + 1, count + 1 + starts.size)
        count += starts.size
        joined[z] = ids[plane]
        previous, previous_ids = plane, ids
    return joined


def continuing_pairs(
    lower: np.ndarray, upper: np.ndarray, min_iou: float = JOIN_MIN_IOU
) -> list[tuple[int, int]]:
    """Pairs (``lower``'s object, ``upper``'s object) that are one object across two slices.

    Each pair is a mutual best match (by intersection over union) of at least ``min_iou``.
    """
    overlaps = Overlaps.of(lower, upper)
    if overlaps is None:
        return []
    pairs, iou = overlaps.pairs, overlaps.iou()
    best_for_a = _best_by_key(pairs[0], iou, overlaps.sizes_first.size)
    best_for_b = _best_by_key(pairs[1], iou, overlaps.sizes_second.size)
    index = np.arange(iou.size)
    mutual = (best_for_a[pairs[0]] == index) & (best_for_b[pairs[1]] == index) & (iou >= min_iou)
    return [(int(x), int(y)) for x, y in pairs[:, mutual].T]


def _best_by_key(keys: np.ndarray, scores: np.ndarray, size: int) -> np.ndarray:
    """For each key, the position of its highest score (ties: the first); -1 where absent."""
    order = np.lexsort((-scores, keys))
    first = np.ones(order.size, bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    best = np.full(size, -1, np.int64)
    best[keys[order][first]] = order[first]
    return best
