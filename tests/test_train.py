import warnings

import numpy as np
import pytest
import torch

from napari_unet.core.metrics import class_scores, confusion_matrix
from napari_unet.core.models.registry import load_model, save_model
from napari_unet.core.predict.predictor import Predictor
from napari_unet.core.progress import Cancelled, CancelToken
from napari_unet.core.train.averaging import AveragingWindow
from napari_unet.core.train.finetune_check import FineTuneReport
from napari_unet.core.train.loop import Schedule, TrainingProgress, train
from napari_unet.core.train.time_budget import ClosingWork
from napari_unet.core.train.training_data import hold_out_objects

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = {"depth": 2, "base_channels": 8}


def squares(n_images: int = 3, size: int = 32, seed: int = 0) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n_images):
        mask = np.zeros((size, size), dtype=np.uint8)
        for _ in range(3):
            y, x = rng.integers(2, size - 10, 2)
            mask[y : y + 8, x : x + 8] = 1
        images.append(mask * 100.0 + rng.normal(0, 10, mask.shape))
        masks.append(mask)
    return images, masks


def class_iou(model, images, masks) -> np.ndarray:
    predictor = Predictor(model, device="cpu", precision="fp32")
    n_classes = model.description.architecture.out_channels
    confusion = sum(
        confusion_matrix(mask, predictor.predict(image, axes="YX", output="semantic"), n_classes)
        for image, mask in zip(images, masks, strict=True)
    )
    return class_scores(confusion)["iou"]


def foreground_iou(model, images, masks) -> float:
    return class_iou(model, images, masks)[1]


def test_a_tiny_set_is_overfit_in_a_few_dozen_steps():
    images, masks = squares()
    losses: list[float] = []
    untrained = train(images, masks, target="semantic", architecture=TINY, epochs=0, val_fraction=0)
    model = train(
        images,
        masks,
        target="semantic",
        architecture=TINY,
        epochs=1,
        steps_per_epoch=30,
        batch_size=4,
        learning_rate=1e-2,
        augment=False,
        val_fraction=0,
        progress=lambda p: losses.append(p.train_loss) if not p.val_metrics else None,
    )
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert foreground_iou(model, images, masks) > max(0.8, foreground_iou(untrained, images, masks))


def test_bf16_autocast_training_learns_as_well_as_fp32():
    """The accuracy check behind precision="auto" picking bf16 on CPUs with bf16 hardware."""
    images, masks = squares()
    settings = {
        "target": "semantic",
        "architecture": TINY,
        "epochs": 1,
        "steps_per_epoch": 30,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "augment": False,
        "val_fraction": 0,
    }
    scores = {
        precision: foreground_iou(
            train(images, masks, precision=precision, **settings), images, masks
        )
        for precision in ("fp32", "bf16")
    }
    assert scores["bf16"] > 0.8
    assert abs(scores["bf16"] - scores["fp32"]) < 0.05, scores


SHORT_RUN = {
    "target": "semantic",
    "architecture": TINY,
    "epochs": 3,
    "steps_per_epoch": 2,
    "batch_size": 2,
}


def cancelled_after_epoch_2_then_resumed(
    folder, settings: dict, on_epoch=lambda update: None
) -> tuple:
    """Train, cancel at the end of epoch 2, resume; return (resumed, uninterrupted) models."""
    images, masks = squares(4)
    token = CancelToken()

    def report(update: TrainingProgress) -> None:
        if update.val_metrics:
            on_epoch(update)
            if update.epoch == 2:
                token.cancel()

    with pytest.raises(Cancelled):
        train(images, masks, checkpoint_dir=folder, progress=report, cancel=token, **settings)
    assert (folder / "best" / "model.json").is_file()
    resumed = train(images, masks, checkpoint_dir=folder, resume=True, progress=report, **settings)
    return resumed, train(images, masks, **settings)


def test_cancel_keeps_a_checkpoint_that_resumes_to_the_same_result(tmp_path):
    epochs_seen: list[int] = []
    resumed, uninterrupted = cancelled_after_epoch_2_then_resumed(
        tmp_path, SHORT_RUN, lambda update: epochs_seen.append(update.epoch)
    )
    assert epochs_seen == [1, 2, 3]
    for key, value in uninterrupted.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value)


def test_saved_model_reloads_with_its_card_and_identical_outputs(tmp_path):
    images, masks = squares()
    model = train(
        images,
        masks,
        target="instances",
        architecture=TINY,
        epochs=1,
        steps_per_epoch=2,
        name="tiny",
    )
    assert model.description.output_kind == "instances"
    assert "ap50" in model.description.metrics["validation"]
    loaded = load_model(save_model(model, tmp_path / "tiny"))
    image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    np.testing.assert_allclose(
        *[
            Predictor(m, device="cpu", precision="fp32").predict(image, output="probabilities")
            for m in (loaded, model)
        ],
        atol=1e-6,
    )


def test_fine_tuning_starts_from_the_base_weights_and_records_it():
    images, masks = squares()
    base = train(
        images,
        masks,
        target="semantic",
        architecture=TINY,
        epochs=1,
        steps_per_epoch=1,
        name="base",
    )
    tuned = train(
        images,
        masks,
        target="semantic",
        base_model=base,
        epochs=0,
        name="tuned",
        class_names=["bg", "fg"],
    )
    assert tuned.name == "tuned" and tuned.description.provenance["fine_tuned_from"] == "base"
    assert tuned.description.class_names == ["bg", "fg"]
    for key, value in base.network.state_dict().items():
        torch.testing.assert_close(tuned.network.state_dict()[key], value)


def test_a_frozen_encoder_keeps_its_weights_and_adapts_its_statistics():
    images, masks = squares()
    base = train(images, masks, target="semantic", architecture=TINY, epochs=0, name="base")
    tuned = train(
        [image * 3 + 5 for image in images],
        masks,
        target="semantic",
        base_model=base,
        epochs=1,
        steps_per_epoch=3,
        freeze_encoder=True,
        val_fraction=0,
    )
    before, after = base.network.state_dict(), tuned.network.state_dict()
    for name, weight in base.network.named_parameters():
        moved = not torch.equal(after[name], weight)
        assert moved == (not name.startswith("encoders.")), name
    statistics = [
        name for name in before if name.startswith("encoders.") and "running_mean" in name
    ]
    assert statistics and all(not torch.equal(before[n], after[n]) for n in statistics)


def test_fine_tuning_changes_only_the_normalisation_keys_given():
    images, masks = squares()
    base = train(images, masks, target="semantic", architecture=TINY, epochs=0, name="base")
    settings = dict(base.description.normalization)
    kept = train(images, masks, target="semantic", base_model=base, epochs=0)
    stained = train(
        images,
        masks,
        target="semantic",
        base_model=base,
        epochs=0,
        normalization={"rgb": "hematoxylin"},
    )
    assert kept.description.normalization == settings
    assert stained.description.normalization == {**settings, "rgb": "hematoxylin"}
    with pytest.raises(ValueError, match=r"normalization\.rgb"):
        train(images, masks, target="semantic", base_model=base, normalization={"rgb": "eosin"})


def test_sparse_labels_train_from_a_few_painted_pixels():
    images, masks = squares(2)
    sparse = [np.zeros_like(mask) for mask in masks]
    for mask, painted in zip(masks, sparse, strict=True):
        painted[:2] = 1  # a strip of background (class 0)
        painted[mask > 0] = 2  # the objects (class 1)
    model = train(
        images,
        sparse,
        target="semantic",
        sparse=True,
        architecture=TINY,
        epochs=1,
        steps_per_epoch=3,
        val_fraction=0,
    )
    assert model.description.architecture.out_channels == 2


def test_volumes_train_a_3d_network():
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 1, (8, 16, 16))
    mask = np.zeros((8, 16, 16), dtype=np.uint16)
    mask[2:6, 4:12, 4:12] = 1
    model = train(
        [volume], [mask], architecture={"depth": 1, "base_channels": 2}, epochs=1, steps_per_epoch=1
    )
    assert model.description.spatial_dims == 3


def test_weight_averaging_returns_the_mean_of_the_last_epochs_and_survives_a_resume(tmp_path):
    # the last 0.67 * 3 = 2.01 epochs, rounded up: all three; no validation to choose by
    settings = {**SHORT_RUN, "val_fraction": 0, "average_weights": 0.67}
    snapshots: list[dict[str, torch.Tensor]] = []

    def keep_snapshot(_: TrainingProgress) -> None:
        snapshots.append(torch.load(tmp_path / "last.pt", weights_only=True)["network"])

    resumed, uninterrupted = cancelled_after_epoch_2_then_resumed(tmp_path, settings, keep_snapshot)
    assert resumed.description.metrics["validation"]["averaged_epochs"] == 3
    assert len(snapshots) == 3
    for key, value in resumed.network.state_dict().items():
        torch.testing.assert_close(uninterrupted.network.state_dict()[key], value)
    for key, value in resumed.network.named_parameters():  # buffers are measured, not averaged
        torch.testing.assert_close(value, torch.stack([s[key] for s in snapshots]).mean(0))


def test_a_time_budget_averages_the_epochs_that_end_in_its_last_share(monkeypatch, fake_clock):
    window = AveragingWindow.of(Schedule(10**6, 1, budget_s=60.0), share=0.5)
    assert [window.includes(epoch, done) for epoch, done in [(1, 0.4), (9, 0.5), (2, 0.6)]] == [
        False,
        False,
        True,
    ]
    import napari_unet.core.train.loop as engine

    fake_clock.charge(monkeypatch, engine, "segmentation_loss", 0.1)  # one step
    images, masks = squares(2)
    model = train(
        images,
        masks,
        target="semantic",
        architecture=TINY,
        minutes=0.03,
        val_fraction=0,
        steps_per_epoch=1,
        average_weights=0.5,
    )
    # one-step epochs of 0.1 s on a fake clock: 16 fit before the 0.19 s kept for the closing
    # phases, and the 8 that end in the second half of those 1.6 s are averaged
    assert model.description.metrics["validation"]["averaged_epochs"] == 8


def test_weight_averaging_share_must_be_a_fraction():
    images, masks = squares(2)
    with pytest.raises(ValueError, match="average_weights must be a share from 0 to 1"):
        train(images, masks, target="semantic", architecture=TINY, epochs=1, average_weights=2)


def test_the_validation_score_is_what_the_predictor_gives_with_the_cards_normalisation():
    images, masks = squares(3)
    bright = [image * 50 + 1000 for image in images]  # meanstd undoes this; raw values would not
    model = train(
        images[:2],
        masks[:2],
        validation=(bright[2:], masks[2:]),
        target="semantic",
        architecture=TINY,
        normalization={"kind": "meanstd"},
        epochs=1,
        steps_per_epoch=3,
    )
    assert model.description.normalization == {"kind": "meanstd"}
    iou = class_iou(model, bright[2:], masks[2:])
    validation = model.description.metrics["validation"]
    assert validation["score"] == pytest.approx(np.nanmean(iou), abs=1e-9)
    assert validation["iou_class 1"] == pytest.approx(iou[1], abs=1e-9)


def test_training_on_an_image_with_nan_fails_before_any_weight_changes():
    images, masks = squares(2)
    images[1][5, 5] = np.nan
    with pytest.raises(ValueError, match="image 1 contains 1 NaN"):
        train(images, masks, target="semantic", architecture=TINY, epochs=1)


def test_semantic_masks_of_object_labels_are_refused_before_building_a_network():
    images, masks = squares(1, size=64)
    masks[0] = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    with pytest.raises(ValueError, match=r"4096 classes, more than 64"):
        train(images, masks, target="semantic", epochs=1)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from napari_unet.core.train import loop as training

    calls = []

    def diverging(*args, **kwargs):
        calls.append(1)
        loss = training_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 4 else loss

    training_loss = training.segmentation_loss
    monkeypatch.setattr(training, "segmentation_loss", diverging)
    images, masks = squares(3)
    with pytest.raises(FloatingPointError, match=rf"loss became NaN .*epoch 2, step 2.*{tmp_path}"):
        train(images, masks, checkpoint_dir=tmp_path, **SHORT_RUN)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["run"]["epoch"] == 1
    assert all(torch.isfinite(value).all() for value in state["network"].values())
    best = load_model(tmp_path / "best")
    assert all(torch.isfinite(value).all() for value in best.network.state_dict().values())


def discs(count: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of ``count`` bright discs on a grid, and their instance mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    step = size // 4
    for label in range(1, count + 1):
        cy, cx = divmod(label - 1, 4)
        mask[(yy - step * cy - step // 2) ** 2 + (xx - step * cx - step // 2) ** 2 < 30] = label
    return (mask > 0) * 200.0 + rng.normal(0, 10, mask.shape), mask


def test_a_time_budget_covers_slow_validation_and_names_each_phase(monkeypatch, fake_clock):
    """The closing phases (here: a validation pass of 1 s after the epochs) fit in the budget.

    On a fake clock, steps take 0.25 s and validation passes 1 s, so the run's length is exact.
    """
    import napari_unet.core.train.loop as engine

    step_s, validation_s, budget_s = 0.25, 1.0, 6.0

    fake_clock.charge(monkeypatch, engine, "validation_metrics", validation_s)
    fake_clock.charge(monkeypatch, engine, "segmentation_loss", step_s)
    images, masks = squares(3)
    phases: list[str] = []
    began: dict[str, float] = {}
    started = fake_clock()

    def note(update: TrainingProgress) -> None:
        phases.append(update.phase)
        began.setdefault(update.phase, fake_clock() - started)

    model = train(
        images,
        masks,
        target="semantic",
        architecture=TINY,
        minutes=budget_s / 60,
        steps_per_epoch=2,
        average_weights=0.5,
        progress=note,
    )
    # 6 epochs of 2 steps and one validation (later ones would pass validation's share of the
    # time); the next step would have reached into the 1.9 s kept for the closing phases
    # (1.3 x (0.48 s of batch-norm batches + a 1 s validation)), which then took 1 s.
    assert (began["averaging weights"], fake_clock() - started) == (4.0, 5.0)  # within 6 s
    closing = list(dict.fromkeys(phases[phases.index("training") :]))
    assert closing == [
        "training",
        "averaging weights",
        "re-estimating batch-norm statistics",
        "validating",
        "saving",
    ]
    assert model.description.metrics["validation"]["batch_norm_batches"] >= 2


def test_batch_norm_re_estimation_gets_at_most_its_share_of_the_budget():
    closing = ClosingWork(averaging=True, validations=1, step_s=3.0, validation_s=2.0, save_s=0.1)
    assert closing.batch_norm_s(60.0) == pytest.approx(0.08 * 60)  # 20 batches would take 30 s
    assert closing.batch_norm_s(3600.0) == pytest.approx(20 * 0.5 * 3.0)
    assert closing.seconds(60.0) == pytest.approx(1.3 * (4.8 + 2.0 + 3 * 0.1))
    schedule = Schedule(10**6, 1, budget_s=60.0, closing=closing)
    assert schedule.training_s() == pytest.approx(60.0 - closing.seconds(60.0))


def test_held_out_objects_are_whole_and_kept_out_of_training():
    _, mask = discs(10)
    training, checking = hold_out_objects([mask], sparse=False, share=0.2, seed=0)
    held = np.unique(checking[0])[1:]
    assert held.size == 2  # a fifth of 10 objects
    for label in held:  # sparse convention: object k is k + 1; held-out pixels unannotated
        assert np.array_equal(checking[0] == label, mask == label - 1)
        assert not training[0][mask == label - 1].any()
    assert set(np.unique(training[0])) == {0, 1} | {k + 1 for k in range(1, 11)} - set(held)
    _, few = discs(7)
    assert not hold_out_objects([few], sparse=False, share=0.2, seed=0)[1][0].any()


def test_a_fine_tune_scores_its_base_and_itself_on_held_out_objects():
    image, mask = discs(10)
    base = train([image], [mask], architecture=TINY, epochs=0, val_fraction=0, name="base")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = train([image], [mask], base_model=base, minutes=0.05, name="tuned")
    check = tuned.description.metrics["fine_tuning"]
    assert check["held_out"] == "2 held-out painted objects"
    assert 0.0 <= check["base_score"] <= 1.0 and 0.0 <= check["score"] <= 1.0
    worse = check["score"] < check["base_score"]
    assert (check["verdict"] == "worse") == worse
    assert any("made the model worse" in str(w.message) for w in caught) == worse
    card = tuned.description.description
    assert card.startswith("Fine-tuned from base on 1 image, 8 objects, ")
    assert f"base {check['base_score']:.3f}, fine-tuned {check['score']:.3f}" in card


def test_a_fine_tune_without_held_out_labels_says_it_cannot_be_checked():
    image, mask = discs(5)
    base = train([image], [mask], architecture=TINY, epochs=0, val_fraction=0, name="base")
    tuned = train([image], [mask], base_model=base, epochs=1, steps_per_epoch=1, name="tuned")
    report = FineTuneReport.from_metrics(tuned.description.metrics)
    assert report is not None and report.verdict == "unchecked"
    assert "cannot be checked" in report.summary() and "--val-images" in report.summary()


@pytest.mark.parametrize(
    ("base_score", "score", "verdict"),
    [(0.6, 0.5, "worse"), (0.5, 0.6, "better"), (0.5, 0.5, "same")],
)
def test_the_verdict_follows_the_figures(base_score, score, verdict):
    report = FineTuneReport("nuclei", "AP@0.5", "3 held-out images", base_score, score)
    assert report.verdict == verdict
    assert ("WORSE than nuclei; keep using nuclei" in report.summary()) == (verdict == "worse")


def test_a_new_model_describes_its_data_and_validation_score():
    images, masks = squares(3)
    model = train(images, masks, target="semantic", architecture=TINY, epochs=1, steps_per_epoch=1)
    score = model.description.metrics["validation"]["score"]
    assert model.description.description.startswith("Trained from scratch on 2 images, ")
    assert model.description.description.endswith(f"; validation score {score:.3f}.")


def test_objects_are_held_out_only_where_no_image_checks_the_run():
    image, mask = discs(10)
    with pytest.raises(ValueError, match="validation images do the check"):
        train([image], [mask], architecture=TINY, validation=([image], [mask]), holdout_objects=0.2)


def test_thresholds_asked_for_on_one_image_are_tuned_on_its_full_labels(monkeypatch):
    import napari_unet.core.train.loop as engine

    tuned_on: list[np.ndarray] = []

    def record(model, images, masks, device):
        tuned_on.extend(masks)
        return dict(model.description.postprocess)

    monkeypatch.setattr(engine, "tune_instance_postprocess", record)
    image, mask = discs(10)
    base = train([image], [mask], architecture=TINY, epochs=0, val_fraction=0, name="base")
    tuned = train([image], [mask], base_model=base, epochs=1, steps_per_epoch=1, calibrate=True)
    assert tuned.description.metrics["fine_tuning"]["held_out"] == "2 held-out painted objects"
    assert len(tuned_on) == 1 and np.array_equal(tuned_on[0], mask)  # not the sparse copy
