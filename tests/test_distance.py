"""Distance instance models: target, post-processing, activation, training and fine-tuning."""

import numpy as np
import pytest
import torch

from instance_helpers import TINY, touching_discs, trained_on_touching_discs
from napari_unet.core.metrics import instance_scores
from napari_unet.core.models.network import UNetConfig
from napari_unet.core.models.registry import ModelDescription
from napari_unet.core.predict.postprocess import activate, instance_labels, instance_source
from napari_unet.core.predict.predictor import Predictor
from napari_unet.core.train.checkpoint import CHECKPOINT_FILE
from napari_unet.core.train.loop import train
from napari_unet.core.train.targets import center_distance
from tiny_models import make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_center_distance_peaks_at_each_centre_and_dips_between_touching_objects():
    mask = np.zeros((20, 40), np.uint16)
    mask[5:15, 5:15] = 1
    mask[5:15, 15:25] = 2  # touches object 1 along a whole side
    distance = center_distance(mask)
    assert distance[mask == 0].max() == 0
    for label in (1, 2):
        assert distance[mask == label].max() == pytest.approx(1.0)
    valley = distance[10, 14:16]
    assert valley.max() < 0.3 < distance[10, 10]  # low along the shared outline
    sparse = center_distance(np.where(mask == 1, 1, mask), sparse=True)
    assert sparse[mask == 1].max() == 0  # value 1 is painted background when sparse


def test_distance_seeds_split_touching_objects_that_the_interior_merges():
    mask = np.zeros((20, 40), np.uint16)
    mask[5:15, 5:15], mask[5:15, 15:25] = 1, 2
    interior = (mask > 0).astype(np.float32)  # no boundary between the two: one blob
    probabilities = np.stack([1 - interior, interior, 0 * interior])
    assert instance_labels(probabilities, min_size=4).max() == 1
    with_distance = np.concatenate([probabilities, center_distance(mask)[np.newaxis]])
    labels = instance_labels(with_distance, seed_threshold=0.5, min_size=4)
    assert labels.max() == 2
    assert instance_scores(mask, labels)["ap50"] == 1.0


def test_activation_softmaxes_the_classes_and_squashes_the_distance():
    description = ModelDescription(
        name="d",
        architecture=UNetConfig(out_channels=4),
        output_kind="instances",
        class_names=["background", "interior", "boundary", "distance"],
    )
    assert instance_source(description) == "distance"
    logits = np.random.default_rng(0).normal(size=(4, 5, 5)).astype(np.float32)
    probabilities = activate(logits, description)
    np.testing.assert_allclose(probabilities[:3].sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[3], 1 / (1 + np.exp(-logits[3])), rtol=1e-5)


def test_a_distance_model_learns_to_separate_touching_objects():
    model, images, masks = trained_on_touching_discs("distance")
    assert model.description.class_names[-1] == "distance"
    predictor = Predictor(model, device="cpu", precision="fp32")
    probabilities = predictor.predict(images[3], axes="YX", output="probabilities")
    assert probabilities.shape == (4, 64, 64)
    target = center_distance(masks[3])
    assert np.corrcoef(probabilities[3].ravel(), target.ravel())[0, 1] > 0.7
    labels = predictor.predict(images[3], axes="YX")
    assert instance_scores(masks[3], labels)["ap50"] >= 0.5


def test_fine_tuning_a_boundary_model_into_a_distance_model_keeps_its_classes():
    base = make_model(output_kind="instances")
    images, masks = touching_discs()
    start = train(
        [images], [masks], base_model=base, representation="distance", epochs=0, calibrate=False
    )
    assert start.description.architecture.out_channels == 4
    assert start.description.provenance["fine_tuned_from"] == base.name
    head, base_head = start.network.head, base.network.head
    torch.testing.assert_close(head.weight[:3], base_head.weight)
    torch.testing.assert_close(head.bias[:3], base_head.bias)
    before = Predictor(base, precision="fp32").predict(images, axes="YX", output="probabilities")
    after = Predictor(start, precision="fp32").predict(images, axes="YX", output="probabilities")
    np.testing.assert_allclose(after[:3], before, atol=1e-5)


def test_a_time_budget_ends_the_run_and_annealing_follows_the_clock(
    tmp_path, monkeypatch, fake_clock
):
    """On a fake clock each step takes 0.1 s and nothing else takes time: the run is exact."""
    import napari_unet.core.train.loop as engine

    fake_clock.charge(monkeypatch, engine, "segmentation_loss", 0.1)  # one step
    images, masks = touching_discs()
    seen = []
    model = train(
        [images],
        [masks],
        architecture=TINY,
        minutes=0.03,
        steps_per_epoch=2,
        batch_size=2,
        patch_shape=32,
        progress=seen.append,
        checkpoint_dir=tmp_path,
    )
    assert seen[-1].done == 1.0
    assert seen[-1].epoch >= 2  # epochs went on until the time was up
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    # 17 steps: the 18th would end past the 1.8 s budget; resumed runs count this time
    assert state["run"]["elapsed_s"] == pytest.approx(0.03 * 60 - 0.1)
    assert "scaler" in state  # the mixed-precision scaler is part of the checkpoint
    assert state["scheduler"]["_last_lr"][0] < 1e-3 * 0.1  # annealed by the end of the budget
    # without validation images the result is the last weights, not a lucky epoch
    for key, value in model.network.state_dict().items():
        torch.testing.assert_close(value, state["network"][key].cpu())


def test_fine_tuning_recalibrates_the_thresholds_on_held_out_labels_only():
    base = make_model(output_kind="instances")
    base.description.postprocess = {"foreground_threshold": 0.123, "seed_threshold": 0.5}
    images, masks = zip(*(touching_discs(seed=seed) for seed in range(3)), strict=True)
    short = {"base_model": base, "epochs": 1, "steps_per_epoch": 1, "batch_size": 2}
    tuned = train(list(images), list(masks), val_fraction=0.4, **short)
    assert tuned.description.postprocess["foreground_threshold"] != 0.123
    assert set(tuned.description.postprocess) == {
        "foreground_threshold",
        "seed_threshold",
        "min_size",
    }
    for kept in (
        train([images[0]], [masks[0]], **short),  # one image: nothing held out
        train(list(images), list(masks), val_fraction=0.4, calibrate=False, **short),
    ):
        assert kept.description.postprocess["foreground_threshold"] == 0.123
    asked = train([images[0]], [masks[0]], calibrate=True, **short)
    assert asked.description.postprocess["foreground_threshold"] != 0.123


def test_thresholds_are_not_tuned_on_sparse_paintings():
    base = make_model(output_kind="instances")
    base.description.postprocess = {"foreground_threshold": 0.123, "seed_threshold": 0.5}
    images, masks = touching_discs()
    sparse = np.where(masks > 0, masks + 1, 1).astype(np.uint16)
    kept = train([images], [sparse], base_model=base, sparse=True, epochs=1, steps_per_epoch=1)
    assert kept.description.postprocess["foreground_threshold"] == 0.123
    with pytest.raises(ValueError, match="fully labelled"):
        train([images], [sparse], base_model=base, sparse=True, epochs=0, calibrate=True)


def test_semantic_output_of_a_distance_model_is_its_classes_only(blobs):
    model = make_model(output_kind="distance")
    predictor = Predictor(model, device="cpu", precision="fp32")
    classes = predictor.predict(blobs, axes="YX", output="semantic")
    probabilities = predictor.predict(blobs, axes="YX", output="probabilities")
    np.testing.assert_array_equal(classes, probabilities[:3].argmax(axis=0))


def test_a_distance_model_fine_tuned_back_to_boundaries_keeps_its_class_weights():
    base = make_model(output_kind="distance")
    images, masks = touching_discs()
    start = train([images], [masks], base_model=base, representation="boundaries", epochs=0)
    torch.testing.assert_close(start.network.head.weight, base.network.head.weight[:3])


def test_time_budgets_are_checked():
    images, masks = touching_discs()
    for minutes in (0, -1, float("nan"), True):
        with pytest.raises(ValueError, match="minutes must be a positive number"):
            train([images], [masks], architecture=TINY, minutes=minutes)
