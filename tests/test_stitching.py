"""Seam merging on hand-built block reports: which labels are one object, and their numbers.

Each block reports its labels' core sizes and its labels on the slab around each seam; the
tables map every block's labels to final ones, 1..N, objects joined across seams.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from napari_unet.core.predict.stitching import MATCH_SHARE, BlockLabels, merge_tables


def block(index: tuple[int, ...], sizes: list[int], **slabs: list[list[int]]) -> BlockLabels:
    """A block whose labels 1..n have core ``sizes``; ``seam0=[[...]]`` its labels on seam 0."""
    return BlockLabels(
        index=index,
        count=len(sizes),
        sizes=np.array([0, *sizes]),
        slabs={int(name.removeprefix("seam")): np.array(slab) for name, slab in slabs.items()},
    )


def merged(blocks: list[BlockLabels], min_size: int = 0) -> tuple[list[list[int]], int]:
    """The lookup tables in block order, with the seams between neighbours in that order."""
    keys = [b.index for b in blocks]
    seams = list(itertools.pairwise(keys))
    tables, count = merge_tables(keys, {b.index: b for b in blocks}, seams, min_size)
    return [tables[key].tolist() for key in keys], count


def test_an_object_cut_by_a_seam_is_one_object_and_the_others_keep_their_own_numbers():
    left = block((0, 0), [40, 30], seam0=[[1, 1, 1, 0, 2, 2]])
    right = block((0, 1), [35, 20], seam0=[[1, 1, 1, 0, 0, 0]])
    assert merged([left, right]) == ([[0, 1, 2], [0, 1, 3]], 3)


def test_a_chain_of_seams_joins_an_object_through_four_blocks():
    """Block b's label 1 meets the next block's label 2, so the chain crosses every seam."""
    blocks = [
        block((0,), [50], seam0=[[1, 1, 1]]),
        block((1,), [9, 60], seam0=[[2, 2, 2]], seam1=[[0, 2, 2]]),
        block((2,), [60, 9], seam1=[[0, 1, 1]], seam2=[[1, 1, 0]]),
        block((3,), [7, 40], seam2=[[2, 2, 0]]),
    ]
    assert merged(blocks) == ([[0, 1], [0, 2, 1], [0, 1, 3], [0, 4, 1]], 4)


def test_small_objects_are_dropped_by_their_size_after_merging_and_numbers_have_no_gaps():
    """Two halves of 6 pixels make an object of 12; a lone 8-pixel object goes (minimum 10)."""
    left = block((0, 0), [8, 6, 50], seam0=[[0, 2, 2, 0]])
    right = block((0, 1), [6, 9, 30], seam0=[[0, 1, 1, 0]])
    assert merged([left, right], min_size=10) == ([[0, 0, 1, 2], [0, 1, 0, 3]], 3)
    assert merged([left, right], min_size=0) == ([[0, 1, 2, 3], [0, 2, 4, 5]], 5)


def test_labels_merge_from_the_matching_share_of_the_smaller_one_and_not_below():
    """Both labels cover 6 slab pixels; they overlap by the share of 6 or one pixel less."""
    enough = math.ceil(MATCH_SHARE * 6)
    for overlap, expected in [(enough, [0, 1]), (enough - 1, [0, 2])]:
        lower = block((0,), [20], seam0=[[0] * (6 - overlap) + [1] * 6 + [0] * overlap])
        upper = block((1,), [20], seam0=[[1] * 6 + [0] * 6])
        tables, count = merged([lower, upper])
        assert tables[1] == expected and count == max(expected), overlap


def test_one_label_meeting_two_across_a_seam_joins_them_all():
    """Both of the upper block's labels lie mostly on the lower one: all three are one."""
    lower = block((0,), [30], seam0=[[1, 1, 1, 1, 1, 1]])
    upper = block((1,), [10, 10], seam0=[[1, 1, 1, 2, 2, 2]])
    assert merged([lower, upper]) == ([[0, 1], [0, 1, 1]], 1)


def test_blocks_without_objects_give_empty_tables():
    empty = [block((0,), [], seam0=[[0, 0]]), block((1,), [], seam0=[[0, 0]])]
    assert merged(empty) == ([[0], [0]], 0)
    one = [block((0,), [], seam0=[[0, 0]]), block((1,), [5], seam0=[[1, 0]])]
    assert merged(one) == ([[0], [0, 1]], 1)
