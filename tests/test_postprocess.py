import numpy as np
import pytest

from napari_unet.core.predict.postprocess import cell_instances, instance_labels, semantic_labels


def probabilities_of_two_touching_discs() -> np.ndarray:
    yy, xx = np.mgrid[:40, :60]
    left = (yy - 20) ** 2 + (xx - 20) ** 2 < 12**2
    right = (yy - 20) ** 2 + (xx - 41) ** 2 < 12**2
    rim = (np.abs(xx - 30.5) < 1.5) & (left | right)
    interior = (left | right) & ~rim
    probs = np.stack([~(left | right), interior, rim]).astype(np.float32)
    return 0.05 + 0.9 * probs


def test_touching_objects_split_along_their_boundary():
    labels = instance_labels(probabilities_of_two_touching_discs(), min_size=16)
    assert labels.max() == 2
    assert labels[20, 15] != labels[20, 45]
    assert labels[0, 0] == 0


def test_objects_smaller_than_min_size_are_dropped():
    probs = np.zeros((3, 20, 20), dtype=np.float32)
    probs[0] = 1
    probs[:, 5:7, 5:7] = [[[0]], [[1]], [[0]]]
    assert instance_labels(probs, min_size=5).max() == 0
    assert instance_labels(probs, min_size=4).max() == 1


def test_semantic_labels_pick_the_most_likely_class():
    probs = np.array([[[0.2, 0.7]], [[0.5, 0.1]], [[0.3, 0.2]]])
    assert semantic_labels(probs).tolist() == [[1, 0]]


def membrane_probabilities_with_a_leaky_wall() -> np.ndarray:
    """Two cells left and right of a membrane at x = 20 that is faint in rows 9-11."""
    membrane = np.full((20, 40), 0.05, np.float32)
    membrane[:, 20] = 0.95
    membrane[9:12, 20] = 0.4  # a gap: argmax calls it interior there
    membrane[[0, -1], :] = membrane[:, [0, -1]] = 0.95  # the outer walls
    return np.stack([membrane, 1 - membrane])


def test_cells_stay_apart_across_a_faint_gap_in_their_membrane():
    probabilities = membrane_probabilities_with_a_leaky_wall()
    labels = cell_instances(probabilities, min_size=4)
    assert labels.max() == 2 and labels[5, 5] != labels[5, 35]
    assert (labels[probabilities[0] > 0.5] == 0).all()  # membranes stay visible as label 0


def test_cell_fragments_under_min_size_are_dropped_and_the_membrane_class_is_checked():
    probabilities = np.zeros((2, 20, 20), np.float32)
    probabilities[0] = 1
    probabilities[:, 5:7, 5:7] = [[[0]], [[1]]]
    assert cell_instances(probabilities, min_size=5).max() == 0
    assert cell_instances(probabilities, min_size=4).max() == 1
    with pytest.raises(ValueError, match="membrane_class=2 is not one of the 2 classes"):
        cell_instances(probabilities, membrane_class=2)
