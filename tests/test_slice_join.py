import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.predict.slice_join import JOIN_MIN_IOU, continuing_pairs, join_slices


def boxes(shape, *placements):
    """A label plane with rectangles: each placement is (label, y0, y1, x0, x1)."""
    plane = np.zeros(shape, np.uint16)
    for label, y0, y1, x0, x1 in placements:
        plane[y0:y1, x0:x1] = label
    return plane


def test_cells_whose_interiors_touch_across_slices_stay_apart():
    # Two cells side by side; the membrane between them moves 4 pixels each slice, so each
    # cell's interior touches the other's in the next slice: 3D connectivity makes them one.
    planes = np.stack(
        [boxes((20, 40), (1, 0, 20, 0, 18 + 4 * z), (2, 0, 20, 20 + 4 * z, 40)) for z in range(5)]
    )
    assert ndi.label(planes > 0)[1] == 1
    joined = join_slices(planes)
    assert joined.max() == 2
    assert np.unique(joined[:, :, :10]).tolist() == [1]  # the left cell keeps its label
    assert np.unique(joined[:, :, 37:]).tolist() == [2]


def test_an_object_that_splits_continues_as_one_of_its_parts_only():
    planes = np.stack(
        [boxes((20, 40), (1, 0, 20, 0, 30)), boxes((20, 40), (1, 0, 20, 0, 22), (2, 0, 20, 24, 30))]
    )
    joined = join_slices(planes)
    assert joined.max() == 2 and (joined[1][:, 24:30] != joined[0][0, 0]).all()
    assert [np.unique(p[p > 0]).size for p in joined] == [1, 2]  # each slice keeps its count


def test_overlap_below_the_threshold_starts_a_new_object():
    lower = boxes((10, 100), (1, 0, 10, 0, 40))
    shift = int(40 * (1 - JOIN_MIN_IOU) / (1 + JOIN_MIN_IOU)) + 2  # IoU just under the rule
    upper = boxes((10, 100), (5, 0, 10, shift, shift + 40))
    assert continuing_pairs(lower, upper) == []
    assert continuing_pairs(lower, boxes((10, 100), (5, 0, 10, 5, 45))) == [(1, 5)]
    assert join_slices(np.stack([lower, upper])).max() == 2


def test_objects_are_numbered_from_one_in_order_of_their_first_slice():
    planes = np.stack(
        [
            boxes((10, 30), (7, 0, 5, 0, 10)),
            boxes((10, 30), (3, 0, 5, 0, 10), (9, 5, 10, 20, 30)),
            np.zeros((10, 30), np.uint16),
            boxes((10, 30), (4, 5, 10, 20, 30)),
        ]
    )
    joined = join_slices(planes)
    assert joined.dtype == np.uint32
    assert joined[0, 0, 0] == joined[1, 0, 0] == 1
    assert joined[1, 9, 25] == 2 and joined[3, 9, 25] == 3  # an empty slice breaks a chain
    assert (joined[planes == 0] == 0).all()


def test_join_slices_refuses_anything_but_a_stack():
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        join_slices(np.zeros((4, 4), np.uint16))
