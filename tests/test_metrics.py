import numpy as np
import pytest

from napari_unet.core.metrics import (
    class_scores,
    confusion_matrix,
    instance_scores,
    matching,
    membrane_scores,
)


def touching_pair() -> np.ndarray:
    truth = np.zeros((10, 12), dtype=np.uint16)
    truth[2:8, 1:6] = 1
    truth[2:8, 6:11] = 2
    return truth


def test_identical_instances_score_perfectly():
    scores = instance_scores(touching_pair(), touching_pair() * 7)  # ids need not agree
    assert scores["ap50"] == 1 and scores["map"] == 1 and scores["f1_50"] == 1


def test_a_merge_of_two_touching_objects_is_one_false_positive_and_two_misses():
    merged = (touching_pair() > 0).astype(np.uint16)
    result = matching(touching_pair(), merged, [0.5])[0.5]
    assert (result["tp"], result["fp"], result["fn"]) == (0, 1, 2)
    assert result["ap"] == 0


def test_a_split_object_matches_only_its_larger_part():
    truth = np.zeros((10, 10), dtype=np.uint16)
    truth[1:9, 1:9] = 1  # 64 pixels
    split = truth.copy()
    split[1:9, 7:9] = 2  # the right quarter becomes a second object
    result = matching(truth, split, [0.5, 0.8])
    assert (result[0.5]["tp"], result[0.5]["fp"], result[0.5]["fn"]) == (1, 1, 0)
    assert result[0.5]["ap"] == pytest.approx(1 / 2)
    assert result[0.8]["tp"] == 0  # IoU 48/64 = 0.75 fails the stricter threshold
    assert result[0.5]["precision"] == 0.5 and result[0.5]["recall"] == 1


def test_per_class_iou_and_dice_from_a_hand_made_confusion():
    truth = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    confusion = confusion_matrix(truth, predicted, 2)
    assert confusion.tolist() == [[1, 1], [0, 2]]
    scores = class_scores(confusion)
    np.testing.assert_allclose(scores["iou"], [1 / 2, 2 / 3])
    np.testing.assert_allclose(scores["dice"], [2 / 3, 4 / 5])


def test_rand_error_and_vi_are_zero_for_a_perfect_and_positive_for_a_merge():
    perfect = membrane_scores(touching_pair(), touching_pair())
    assert perfect["rand_error"] == pytest.approx(0) and perfect["vi"] == pytest.approx(0)
    merged = membrane_scores(touching_pair(), (touching_pair() > 0).astype(np.uint16))
    assert merged["rand_error"] > 0.3 and merged["vi_merge"] > 0.5 and merged["vi_split"] == 0
