"""Comparisons of label images shared by the blockwise, cluster and big-data CLI tests."""

from __future__ import annotations

import numpy as np


def matched_share(expected, found, threshold=0.9):
    """Share of expected objects matched one-to-one by a found object with IoU >= threshold."""
    pairs = np.stack([expected.ravel(), found.ravel()])
    pairs = pairs[:, (pairs > 0).all(axis=0)]
    combos, shared = np.unique(pairs, axis=1, return_counts=True)
    sizes_e, sizes_f = np.bincount(expected.ravel()), np.bincount(found.ravel())
    iou = shared / (sizes_e[combos[0]] + sizes_f[combos[1]] - shared)
    good = combos[:, iou >= threshold]
    one_to_one = len(set(good[0])) == good.shape[1] == len(set(good[1]))
    return good.shape[1] / (expected.max() or 1), one_to_one
