import numpy as np
import pytest

from napari_unet.core.train.targets import (
    IGNORE_INDEX,
    instance_target,
    object_labels,
    semantic_target,
    weight_map,
)


def two_touching_squares() -> np.ndarray:
    mask = np.zeros((8, 10), dtype=np.uint16)
    mask[2:6, 1:5] = 1
    mask[2:6, 5:9] = 2
    return mask


def test_touching_objects_are_separated_by_their_boundary_rims():
    target = instance_target(two_touching_squares())
    assert set(np.unique(target)) == {0, 1, 2}
    assert (target[2:6, 4] == 2).all() and (target[2:6, 5] == 2).all()
    interiors = object_labels(two_touching_squares(), "instances")[target == 1]
    assert set(np.unique(interiors)) == {1, 2}


def test_sparse_instances_ignore_unannotated_and_read_1_as_background():
    mask = two_touching_squares() + 1  # objects 2 and 3
    mask[0] = 0  # first row not annotated
    target = instance_target(mask, sparse=True)
    assert (target[0] == IGNORE_INDEX).all()
    assert target[7, 0] == 0
    assert target[3, 2] == 1


def test_sparse_semantic_shifts_classes_down_and_ignores_zero():
    assert semantic_target(np.array([0, 1, 2]), sparse=True).tolist() == [IGNORE_INDEX, 0, 1]
    assert semantic_target(np.array([0, 1, 2])).tolist() == [0, 1, 2]


def test_weight_map_matches_the_hand_computed_paper_formula():
    # two cells (columns 0-2 and 6-8) with a 3-pixel gap; classes 0 = gap, 1 = cell
    target = np.array([[1, 1, 1, 0, 0, 0, 1, 1, 1]], dtype=np.int16)
    objects = np.array([[1, 1, 1, 0, 0, 0, 2, 2, 2]])
    weights = weight_map(target, objects, w0=10, sigma=5)
    # class balance: 3 gap and 6 cell pixels -> 9 / (2 * 3) and 9 / (2 * 6)
    w_gap, w_cell = 1.5, 0.75
    # column 3: d1 = 1 (to column 2), d2 = 3 (to column 6); column 4: d1 = d2 = 2
    assert weights[0, 3] == pytest.approx(w_gap + 10 * np.exp(-((1 + 3) ** 2) / 50), rel=1e-5)
    assert weights[0, 4] == pytest.approx(w_gap + 10 * np.exp(-((2 + 2) ** 2) / 50), rel=1e-5)
    assert weights[0, 0] == pytest.approx(w_cell)


def test_weight_map_gives_ignored_pixels_zero_weight():
    target = np.array([[IGNORE_INDEX, 0, 1]], dtype=np.int16)
    assert weight_map(target, np.array([[0, 0, 1]]))[0, 0] == 0
