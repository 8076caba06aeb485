import numpy as np
import pytest

from napari_unet.core.evaluate import (
    calibrate_binary_decision,
    evaluate,
    painted_only,
    tune_instance_postprocess,
)
from napari_unet.core.metrics import instance_scores
from napari_unet.core.models.network import UNetConfig
from napari_unet.core.models.registry import Model, ModelDescription


def semantic_model() -> Model:
    card = ModelDescription(
        name="tiny",
        architecture=UNetConfig(
            out_channels=2, depth=1, base_channels=2, padding="same", norm="none"
        ),
        class_names=["membrane", "interior"],
    )
    return Model.create(card)


def test_semantic_evaluation_reports_pixel_error_iou_and_rand_per_group(monkeypatch):
    truth = np.ones((20, 20), dtype=np.uint8)
    truth[:, 10] = 0  # a membrane between two cells
    prediction = np.stack([truth == 0, truth == 1]).astype(np.float32)
    monkeypatch.setattr("napari_unet.core.evaluate._probabilities", lambda model, image: prediction)
    results = evaluate([truth, truth], [truth, truth], semantic_model(), groups=["a", "b"])
    assert set(results) == {"overall", "a", "b"}
    overall = results["overall"]
    assert overall["pixel_error"] == 0 and overall["iou_interior"] == 1
    assert overall["rand_error"] == pytest.approx(0) and overall["n_images"] == 2
    with pytest.warns(DeprecationWarning, match=r"evaluate\(images, masks, model\)"):
        old_order = evaluate(semantic_model(), [truth, truth], [truth, truth], groups=["a", "b"])
    assert old_order == results


def test_tuning_picks_thresholds_that_split_touching_objects(monkeypatch):
    truth = np.zeros((20, 30), dtype=np.uint16)
    truth[4:16, 3:15], truth[4:16, 15:27] = 1, 2
    interior = np.zeros(truth.shape, np.float32)
    interior[5:15, 4:14] = interior[5:15, 16:26] = 0.85  # confident cores
    interior[(truth > 0) & (interior == 0)] = 0.55  # rims, including the shared border
    probs = np.stack([1.0 - (truth > 0), interior, (truth > 0) - interior]).astype(np.float32)
    monkeypatch.setattr("napari_unet.core.evaluate._probabilities", lambda model, image: probs)
    card = ModelDescription(
        name="tiny",
        architecture=UNetConfig(out_channels=3, depth=1, base_channels=2),
        output_kind="instances",
        class_names=["background", "interior", "boundary"],
    )
    params = tune_instance_postprocess(Model.create(card), [truth], [truth])
    assert 0.55 < params["seed_threshold"] < 0.85


def test_calibration_moves_a_biased_decision_back_into_the_weights(monkeypatch):
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[:, 5:] = 1
    interior = np.where(truth == 1, 0.45, 0.05).astype(np.float32)  # right but under-confident
    monkeypatch.setattr(
        "napari_unet.core.evaluate._probabilities",
        lambda predictor, image: np.stack([1 - interior, interior]),
    )
    model = semantic_model()
    before = model.network.head.bias.detach().clone()
    offset = calibrate_binary_decision(model, [truth], [truth])
    assert 0.2 < offset < 2.9  # log-odds of 0.45 is -0.2, of 0.05 is -2.9
    shift = model.network.head.bias.detach() - before
    assert shift[1] - shift[0] == pytest.approx(offset)


def test_sparse_masks_score_only_what_was_painted():
    """Painted objects (>= 2) and painted background (1) count; unpainted areas do not."""
    mask = np.zeros((40, 40), np.uint16)
    mask[:, 20:] = 1  # painted background on the right half
    mask[2:8, 2:8], mask[12:18, 2:8] = 2, 3  # two painted objects on the left
    predicted = np.zeros_like(mask)
    predicted[2:8, 2:8] = 1  # matches object 2
    predicted[12:18, 2:6] = 2  # IoU 4/6 with object 3: a match at 0.5
    predicted[30:36, 2:8] = 3  # on unpainted pixels: neither right nor wrong
    predicted[30:36, 30:36] = 4  # on painted background: a false object
    truth, kept = painted_only(mask, predicted)
    assert sorted(np.unique(truth)) == [0, 2, 3]
    assert sorted(np.unique(kept)) == [0, 1, 2, 4]
    assert instance_scores(truth, kept)["ap50"] == pytest.approx(2 / 3)  # 2 TP, 1 FP, 0 FN
