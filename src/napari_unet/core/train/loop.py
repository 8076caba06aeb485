"""The training engine: one ``train`` call used by the CLI, the napari widget and scripts.

It is GUI-free: progress goes to a callback, cancellation comes in through a token, and every
few minutes the full state is checkpointed so a run can be resumed after an interruption.
The pieces live in their own modules: data preparation (:mod:`~napari_unet.core.
training_data`), the starting model (:mod:`~napari_unet.core.train.initial_model`), checkpoints
(:mod:`~napari_unet.core.train.checkpoint`) and weight averaging (:mod:`~napari_unet.core.
averaging`); this module runs the epochs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_unet.core.device import autocast, resolve_device, resolve_precision
from napari_unet.core.evaluate import tune_instance_postprocess, validation_metrics
from napari_unet.core.models.card_checks import check_normalization
from napari_unet.core.models.model_types import INSTANCE_CLASSES
from napari_unet.core.models.network import UNet, UNetConfig
from napari_unet.core.models.registry import Model, ModelDescription, load_model, save_model
from napari_unet.core.progress import Cancelled, CancelToken, check_cancelled
from napari_unet.core.train.averaging import (
    BATCH_NORM_BATCHES,
    MIN_BATCH_NORM_BATCHES,
    AveragingWindow,
    WeightAverage,
)
from napari_unet.core.train.checkpoint import BEST_DIR, Checkpointer, RunState, TrainingState
from napari_unet.core.train.datasets import LabelledImage
from napari_unet.core.train.finetune_check import (
    INSTANCE_METRIC,
    SEMANTIC_METRIC,
    CheckData,
    FineTuneReport,
    describe_training,
)
from napari_unet.core.train.initial_model import initial_model
from napari_unet.core.train.losses import LossName, regression_loss, segmentation_loss
from napari_unet.core.train.options import TrainOptions, with_train_options
from napari_unet.core.train.time_budget import ClosingWork, Schedule
from napari_unet.core.train.training_data import (
    HOLD_OUT_SHARE,
    Batch,
    Data,
    Pairs,
    TrainingData,
    hold_out_objects,
    read_rehearsal,
    read_split,
    read_unlabelled,
)
from napari_unet.names import Target

VALIDATION_SHARE = 0.1
"""Under a time budget, epochs are validated while validation has taken less than this share
of the time: with small images an epoch is one step, and validating each would eat the budget."""

PHASES = (
    "scoring the base model",
    "training",
    "averaging weights",
    "re-estimating batch-norm statistics",
    "validating",
    "checking the fine-tuned model",
    "calibrating thresholds",
    "saving",
)
"""What a run reports through ``TrainingProgress.phase``, in order (some runs skip some)."""


@dataclass
class TrainingProgress:
    """What ``progress`` receives after every step and at the end of every epoch."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    train_loss: float
    val_metrics: dict[str, float] = field(default_factory=dict)
    done: float = 0.0
    """Share of the call done, 0 to 1: by steps, or by time for a ``minutes`` budget (which
    covers the phases after the epochs too)."""
    phase: str = "training"
    """One of :data:`PHASES`: after the epochs, the closing work being done."""


def train(
    images: Data,
    masks: Data,
    *,
    options: TrainOptions | None = None,
    validation: tuple[Data, Data] | None = None,
    base_model: str | os.PathLike[str] | Model | None = None,
    architecture: UNetConfig | dict[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    unlabelled_images: Data | None = None,
    rehearsal: tuple[Data, Data] | None = None,
    progress: Callable[[TrainingProgress], None] | None = None,
    cancel: CancelToken | None = None,
    **changes: Any,
) -> Model:
    """Train a U-Net on image/mask pairs; return its best validation epoch (or its mean).

    Parameters
    ----------
    images, masks
        Lists of arrays (``YX``, ``YXC`` colour, or ``ZYX`` for a 3D architecture) or two
        folders of TIFF files with the same names.
    options
        A :class:`~.options.TrainOptions`; any of its fields may also be given as a keyword
        (on top of ``options``): those below from ``target`` to ``holdout_objects``, and
        ``rehearsal_share``. Every value is checked before any work.
    target
        ``"instances"``: masks hold one label per object, the model learns background,
        interior and boundary. ``"semantic"``: masks hold a class index per pixel.
    representation
        For instances: ``"distance"`` adds an output that regresses each pixel's distance to
        its object's outline (seeds and watershed then use it), ``"flows"`` adds vectors that
        point to each object's centre (followed to group pixels), ``"boundaries"`` keeps the
        three classes only. Default: the base model's, else ``"boundaries"`` (better on
        images like the training set; ``"distance"`` generalises better to other kinds).
    base_model
        Fine-tune this model (name, folder or :class:`Model`) instead of starting from scratch.
    architecture
        The network for a new model; default depth 4, 16 base channels, same padding, batch norm.
    epochs, minutes
        How long to train: ``epochs`` passes, or until ``minutes`` have passed (the learning
        rate then decays over the time budget). Default 50 epochs; with ``minutes`` alone,
        as many epochs as the time allows.
    patch_shape
        Training patch size per spatial axis; default 256 (2D) or 32x128x128 (3D), capped
        at the image size.
    val_fraction, validation
        Hold out this share of the images (at least one, if two or more are given) for
        validation, unless ``validation=(images, masks)`` gives a separate set. Without
        validation images the last weights are the result.
    learning_rate
        Peak learning rate; default 1e-3 for a new network, 1e-4 when fine-tuning.
    weight_map
        Weight the cross-entropy with the paper's map, which stresses thin gaps between objects.
        Default: on when fine-tuning (the built-in models were trained with it), else off.
    sparse
        Mask value 0 means "not annotated" and is ignored; see :mod:`napari_unet.core.train.targets`
        for what the other values mean.
    augment
        Random flips, rotations, elastic deformation and intensity changes (on by default),
        and zoom by up to 1.25x when fine-tuning; an :class:`~.augment.Augmenter`
        sets the ranges, and ``Augmenter.robust()`` adds blur, coarser pixels, photon noise,
        stain variants and copy-paste (measured in docs/training.md, issue 24).
    precision
        ``"auto"`` (bf16 autocast on CPUs with bf16 hardware and on CUDA, else fp32),
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA, with a gradient scaler).
    steps_per_epoch
        Optimiser steps per epoch; default enough patches to cover the training pixels once.
    normalization
        Input normalisation for a new model (default percentile 1-99.8, colour averaged);
        when fine-tuning, only the keys given change, e.g. ``{"rgb": "hematoxylin"}`` to
        feed stained tissue as its hematoxylin stain.
    checkpoint_dir, resume
        Where ``last.pt`` (every ``checkpoint_interval_s`` and every epoch) and the best model
        (``best/``) are written; ``resume=True`` continues from ``last.pt`` there.
    average_weights
        Share of the last epochs (or of the time budget) whose weights are averaged
        (stochastic weight averaging; 0.5 averages the second half, 0 turns it off). The
        mean is then the result and the saved best model, rather than the epoch that scored
        best on the few validation images. Default: 0.5 when fine-tuning, else 0.
    calibrate
        Tune the instance post-processing thresholds on the validation images (or, without
        any, on the training images) once trained. Default: when fine-tuning instances on
        fully labelled (not sparse) masks with validation images; with none (one image),
        the base model's thresholds are kept.
    freeze_encoder
        Keep the contracting path's weights as they are (its batch-norm statistics still
        adapt) and train the expanding path only: fewer weights to fit to one or two images,
        and faster steps. Default: when fine-tuning.
    holdout_objects
        Share of the painted objects kept out of training to check a fine-tune that has no
        validation images (instances only; at least 8 objects, else none is held out).
        Default: 0.2 when fine-tuning without validation images, else 0.
    unlabelled_images
        Images of the same kind without masks (arrays or a folder of TIFFs): the
        batch-norm statistics of the averaged weights are measured on them and the labelled
        images together, so the network is normalised for your kind of image rather than
        for the one image painted (needs ``average_weights`` > 0, as when fine-tuning).
    rehearsal, rehearsal_share
        Labelled images ``(images, masks)`` of the kind the base model was trained on;
        ``rehearsal_share`` of every batch is drawn from them, so that fine-tuning on a few
        images does not make the model forget the rest (batch-norm statistics still come
        from your images only).
    progress, cancel
        Called with a :class:`TrainingProgress` after each step and epoch, and as each phase
        after the epochs begins; checked every step, raising
        :class:`~napari_unet.core.progress.Cancelled` (checkpoints stay on disk).

    A ``minutes`` budget covers the whole call: the epochs stop early enough for what follows
    them (weight averaging, batch-norm re-estimation, validation, calibration, saving). A
    fine-tune scores the base model and the result on labels it did not train on (the
    validation images, or held-out objects) and records both in the card's
    ``metrics["fine_tuning"]`` and description, warning when the result is worse.
    """
    started = time.monotonic()  # a time budget covers the whole call
    options = with_train_options(options, changes)  # every option checked before any work
    torch.manual_seed(options.seed)  # first, so that a new network's weights are reproducible
    train_pairs, val_pairs = read_split(
        images, masks, validation, options.val_fraction, options.seed, options.target
    )
    base = None if base_model is None else load_model(base_model)
    options = options.for_run(fine_tuning=base is not None, validating=bool(val_pairs[0]))
    labelled_pairs = train_pairs  # as given: held-out objects make the training masks sparse
    train_pairs, check_masks = _held_out_objects(
        train_pairs, bool(val_pairs[0]), options, base is not None
    )
    model = _starting_model(base, architecture, train_pairs[1], options)
    data = TrainingData.build(
        train_pairs,
        val_pairs,
        model.description,
        model.network,
        **_data_options(options, check_masks is not None),
        **_added_sources(unlabelled_images, rehearsal, options, model),
    )
    check = _check_data(data, validation is not None, train_pairs[0], check_masks, model)
    schedule = _schedule(options, data, started, check)
    loop = _Loop(model, data, schedule, options, progress)
    report = None if base is None else _base_report(base, options.target, check, loop)
    checkpointer = Checkpointer(checkpoint_dir, options.checkpoint_interval_s)
    result = loop.run(checkpointer, options.resume, options.average_weights, cancel)
    if report is not None and check is not None:
        report.score = _checked_score(result, check, loop)
        report.warn_if_worse()
    if options.calibrate:
        loop.announce("calibrating thresholds")
        tuning = val_pairs if val_pairs[0] else labelled_pairs
        result.description.postprocess = tune_instance_postprocess(
            result, *tuning, device=str(loop.device)
        )
    _describe(result, base, train_pairs[1], options.sparse or check_masks is not None, report)
    loop.announce("saving")  # the checkpoint's best model, then the caller's own save
    if checkpointer.folder is not None:
        save_model(result, checkpointer.folder / BEST_DIR, overwrite=True)
    return result


def _starting_model(
    base: Model | None,
    architecture: UNetConfig | dict[str, Any] | None,
    masks: list[np.ndarray],
    options: TrainOptions,
) -> Model:
    """Build the network to train: new, or the base model's copy; frozen, normalised as asked."""
    model = initial_model(
        base,
        architecture,
        options.target,
        masks,
        options.sparse,
        options.class_names,
        options.name,
        options.representation,
    )
    for weight in model.network.encoders.parameters():
        weight.requires_grad_(not options.freeze_encoder)
    if options.normalization is not None:
        check_normalization(options.normalization)
        # a new model takes these settings; a fine-tuned one changes only the keys given
        kept = {} if base is None else model.description.normalization
        model.description.normalization = {**kept, **options.normalization}
    return model


def _data_options(options: TrainOptions, objects_held_out: bool) -> dict[str, Any]:
    """How ``TrainingData`` samples patches, from the run's options."""
    return {
        "target": options.target,
        "sparse": options.sparse or objects_held_out,  # held-out objects leave gaps
        "weight_map": options.weight_map,
        "augmenter": options.augment or None,
        "patch_shape": options.patch_shape,
        "batch_size": options.batch_size,
        "steps_per_epoch": options.steps_per_epoch,
    }


def _schedule(
    options: TrainOptions, data: TrainingData, started: float, check: CheckData | None
) -> Schedule:
    """Plan the epochs and the time budget, keeping time back for the phases after them."""
    averaging = bool(options.average_weights)
    return Schedule(
        options.epochs,
        data.steps_per_epoch,
        None if options.minutes is None else 60.0 * options.minutes,
        started=started,
        closing=ClosingWork(
            averaging=averaging,
            # the averaged network's validation; calibration predicts again, then searches
            validations=(int(averaging) + 2 * int(options.calibrate)) * bool(data.validating),
            checks=int(check is not None and not check.validation),
        ),
    )


def _added_sources(
    unlabelled: Data | None,
    rehearsal: tuple[Data, Data] | None,
    options: TrainOptions,
    model: Model,
) -> dict[str, Any]:
    """Read the unlabelled images and the rehearsal data, for ``TrainingData.build``."""
    if unlabelled is not None and not options.average_weights:
        raise ValueError(
            "unlabelled_images set the batch-norm statistics of averaged weights; "
            "give average_weights > 0 (the fine-tuning default) to use them"
        )
    dims = model.network.spatial_dims
    return {
        "unlabelled": () if unlabelled is None else read_unlabelled(unlabelled, dims),
        "rehearsal": None if rehearsal is None else read_rehearsal(rehearsal, options.target),
        "rehearsal_share": options.rehearsal_share,
    }


def _held_out_objects(
    pairs: Pairs, has_validation: bool, options: TrainOptions, fine_tuning: bool
) -> tuple[Pairs, list[np.ndarray] | None]:
    """Keep painted objects back to check a fine-tune that has no validation images.

    Returns the pairs to train on (sparse-convention masks when objects were held out) and
    the masks of the held-out objects, or ``None`` when nothing is held out.
    """
    share, target = options.holdout_objects, options.target
    if share is None:
        wanted = fine_tuning and target == "instances" and not has_validation
        share = HOLD_OUT_SHARE if wanted else 0.0
    if share == 0.0:
        return pairs, None
    if target != "instances" or has_validation:
        raise ValueError(
            "holdout_objects keeps painted objects back from an instance model's training "
            "images; with validation images or semantic masks, validation images do the check"
        )
    training, checking = hold_out_objects(pairs[1], options.sparse, share, options.seed)
    if not any(mask.any() for mask in checking):
        return pairs, None
    return (pairs[0], training), checking


def _check_data(
    data: TrainingData,
    given: bool,
    images: list[np.ndarray],
    check_masks: list[np.ndarray] | None,
    model: Model,
) -> CheckData | None:
    """Return the labels a fine-tune is checked on: validation images, or held-out objects."""
    if data.validating:
        count = len(data.validating)
        images_ = f"{count} {'validation' if given else 'held-out'} image{'s' * (count > 1)}"
        return CheckData(data.validating, images_, True)
    if check_masks is None:
        return None
    items = [
        LabelledImage.build(image, mask, model.description, "instances", True, False)
        for image, mask in zip(images, check_masks, strict=True)
        if mask.any()
    ]
    objects = sum(np.unique(mask).size - 1 for mask in check_masks)
    return CheckData(items, f"{objects} held-out painted objects", False)


def _base_report(
    base: Model, target: Target, check: CheckData | None, loop: _Loop
) -> FineTuneReport:
    """Score the base model on the check data first, timing the pass for the budget."""
    metric = INSTANCE_METRIC if target == "instances" else SEMANTIC_METRIC
    report = FineTuneReport(base.name, metric, "" if check is None else check.what)
    if check is not None:
        loop.announce("scoring the base model")
        begun = time.monotonic()
        report.base_score = validation_metrics(base, check.items, str(loop.device))["score"]
        seconds = time.monotonic() - begun
        if check.validation:
            loop.schedule.closing.validation_s = seconds
        else:
            loop.schedule.closing.check_s = seconds
    return report


def _checked_score(result: Model, check: CheckData, loop: _Loop) -> float:
    """Score the fine-tuned model on the check data (reusing the validation score if it is)."""
    validated = result.description.metrics.get("validation", {})
    if check.validation and "score" in validated:
        return float(validated["score"])
    loop.announce("checking the fine-tuned model")
    return validation_metrics(result, check.items, str(loop.device))["score"]


def _describe(
    result: Model,
    base: Model | None,
    masks: list[np.ndarray],
    sparse: bool,
    report: FineTuneReport | None,
) -> None:
    """Give the trained model its own card text and, for a fine-tune, the before/after check."""
    card = result.description
    validation = card.metrics.get("validation", {})
    card.description = describe_training(
        card, None if base is None else base.name, masks, sparse, report, validation
    )
    if report is not None:
        card.metrics["fine_tuning"] = report.to_dict()


class _Loop:
    """The epoch loop: optimiser steps, per-epoch validation, best-epoch keeping."""

    def __init__(
        self,
        model: Model,
        data: TrainingData,
        schedule: Schedule,
        options: TrainOptions,
        progress: Callable[[TrainingProgress], None] | None,
    ) -> None:
        loss, learning_rate = options.loss, options.learning_rate
        device, precision = options.device, options.precision
        self.description = model.description
        self.progress = progress
        self.validation_spent_s = 0.0
        self.step_began: float | None = None
        self.network = model.network
        self.data = data
        self.schedule = schedule
        self.loss = loss
        self.learning_rate = learning_rate
        self.device = torch.device(resolve_device(device))
        self.dtype = resolve_precision(precision, str(self.device))
        if self.dtype == torch.float16 and self.device.type != "cuda":
            if precision != "auto":
                raise ValueError("fp16 training needs CUDA (its gradient scaler); use bf16")
            self.dtype = None  # e.g. Apple MPS: fp32, as no loss scaling guards fp16 there
        self.memory_format = (
            torch.channels_last if self.network.spatial_dims == 2 else torch.contiguous_format
        )
        self.network.to(self.device, memory_format=self.memory_format)
        moving = [weight for weight in self.network.parameters() if weight.requires_grad]
        optimizer = torch.optim.Adam(moving, lr=learning_rate)
        self.state = TrainingState(
            self.network,
            optimizer,
            torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor),
            torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16),
            np.random.default_rng(options.seed),
            None,
        )
        self.run_state = RunState()

    def run(
        self,
        checkpointer: Checkpointer,
        resume: bool,
        average_share: float,
        cancel: CancelToken | None,
    ) -> Model:
        """Train until the schedule is over; return the best (or averaged, or last) weights."""
        averaging = AveragingWindow.of(self.schedule, average_share)
        if averaging is not None:
            self.state.average = WeightAverage(self.network)
        if resume:
            self.run_state = checkpointer.resume(self.state)
            self.schedule.elapsed_before = self.run_state.elapsed_s
        run = self.run_state
        try:
            while not self.schedule.over(self._steps_done()):
                self.network.train()
                while run.step < self.data.steps_per_epoch and not self.schedule.over(
                    self._steps_done()
                ):
                    check_cancelled(cancel)
                    step_loss = self._step(checkpointer)
                    self._report(self._progress(step_loss))
                    if checkpointer.due():
                        self._save(checkpointer)
                metrics = self._end_epoch(checkpointer.folder, averaging)
                self._save(checkpointer)
                self._report(self._progress(metrics["train_loss"], metrics))
        except Cancelled:
            self._save(checkpointer)
            raise
        return self._result(checkpointer.folder)

    def _steps_done(self) -> int:
        return self.run_state.epoch * self.data.steps_per_epoch + self.run_state.step

    def _progress(
        self, loss: float, metrics: dict[str, float] | None = None, phase: str = "training"
    ) -> TrainingProgress:
        run = self.run_state
        return TrainingProgress(
            run.epoch + (0 if metrics or phase != "training" else 1),
            self.schedule.epochs,
            self.data.steps_per_epoch if metrics else run.step,
            self.data.steps_per_epoch,
            loss,
            metrics or {},
            self.schedule.share_of_call(self._steps_done()),
            phase,
        )

    def _report(self, update: TrainingProgress) -> None:
        if self.progress is not None:
            self.progress(update)

    def announce(self, phase: str) -> None:
        """Tell the caller that ``phase`` (one of :data:`PHASES`) begins.

        The last one, saving, reports the call as done: progress bars end full, not at the
        share of the budget a run that ended early had used.
        """
        history = self.run_state.history
        loss = history[-1]["train_loss"] if history else float("nan")
        update = self._progress(loss, phase=phase)
        if phase == PHASES[-1]:
            update.done = 1.0
        self._report(update)

    def _step(self, checkpointer: Checkpointer) -> float:
        """One optimiser step on a fresh batch; returns its loss."""
        begun = time.monotonic()
        if self.step_began is not None:
            self.schedule.closing.note_step(begun - self.step_began)
        self.step_began = begun
        batch = self.data.batch(self.state.rng, self.network, self.device, self.memory_format)
        optimizer, scaler = self.state.optimizer, self.state.scaler
        optimizer.zero_grad(set_to_none=True)
        with autocast(str(self.device), self.dtype):
            logits = self.network(batch.inputs)
        step_loss = _loss(logits.float(), batch, self.loss)
        if not torch.isfinite(step_loss):
            raise self._diverged("loss", checkpointer.folder)
        scaler.scale(step_loss).backward()
        scaler.step(optimizer)
        scaler.update()
        self.state.scheduler.step()
        self.run_state.step += 1
        self.run_state.loss_sum += step_loss.item()
        return step_loss.item()

    def _end_epoch(self, folder: Any, averaging: AveragingWindow | None) -> dict[str, float]:
        """Validate when due, keep the best weights, add them to the average; return metrics."""
        run = self.run_state
        train_loss = run.loss_sum / max(1, run.step)
        self._check_finite(folder)
        if self.state.average is not None and averaging is not None:
            if averaging.includes(run.epoch + 1, self.schedule.done(self._steps_done())):
                self.state.average.update(self.network)
        validated = self._validation_due()
        metrics = {**(self._validate(self.network) if validated else {}), "train_loss": train_loss}
        run.history.append(metrics)
        run.epoch, run.step, run.loss_sum = run.epoch + 1, 0, 0.0
        # with validation images the validated epochs compete; without, the latest is the best
        if self.data.validating:
            score = (metrics["score"], -train_loss) if validated else None
        else:
            score = (run.epoch, 0.0)
        if score is not None and score > run.best_score:
            run.best_score, run.best_metrics = score, metrics
            run.best_state = _cpu_copy(self.network.state_dict())
            if folder is not None:
                save_model(self._finished(self.network, metrics), folder / BEST_DIR, overwrite=True)
        return metrics

    def _validation_due(self) -> bool:
        """Every epoch, except under a budget once validation took its share of the time."""
        if not self.data.validating:
            return False
        if self.schedule.budget_s is None or self.validation_spent_s == 0.0:
            return True
        return self.validation_spent_s <= VALIDATION_SHARE * self.schedule.elapsed()

    def _validate(self, network: UNet) -> dict[str, float]:
        """Score ``network`` on the validation images, timing it for the budget's estimate."""
        begun = time.monotonic()
        metrics = validation_metrics(self._model(network), self.data.validating, str(self.device))
        seconds = time.monotonic() - begun
        self.validation_spent_s += seconds
        self.schedule.closing.validation_s = seconds
        return metrics

    def _result(self, folder: Any) -> Model:
        """Return the averaged weights (statistics re-measured, validated), else the best epoch."""
        run, average = self.run_state, self.state.average
        if average is not None and average.count:
            self.announce("averaging weights")
            batches: list[int] = []
            self.announce("re-estimating batch-norm statistics")
            with autocast(str(self.device), self.dtype):  # the precision the statistics train in
                averaged = average.network(self._normalising_batches(batches))
            metrics: dict[str, float] = {}
            if self.data.validating:
                self.announce("validating")
                metrics = self._validate(averaged)
            metrics["averaged_epochs"] = float(average.count)
            metrics["batch_norm_batches"] = float(len(batches))
            run.best_metrics = metrics
            run.best_state = _cpu_copy(averaged.state_dict())
        if run.best_state is not None:
            self.network.load_state_dict(run.best_state)
        elif folder is not None and (folder / BEST_DIR).is_dir():
            self.network.load_state_dict(load_model(folder / BEST_DIR).network.state_dict())
        return self._finished(self.network, run.best_metrics)

    def _normalising_batches(self, counted: list[int]) -> Iterator[torch.Tensor]:
        """Batches of the user's images for the averaged network's batch-norm statistics.

        Training batches, with the unlabelled images and without the rehearsal data.

        Up to :data:`BATCH_NORM_BATCHES` (more for large data, at most 50), but under a time
        budget only as many as its share for them allows (at least
        :data:`MIN_BATCH_NORM_BATCHES`): each batch holds thousands of pixels per channel.
        """
        wanted = min(max(self.data.steps_per_epoch, BATCH_NORM_BATCHES), 50)
        closing, budget_s = self.schedule.closing, self.schedule.budget_s
        deadline = math.inf
        if budget_s is not None:
            deadline = time.monotonic() + closing.batch_norm_s(budget_s)
        batch_s = 0.0  # the last batch's draw and forward pass: the next one takes as long
        for index in range(wanted):
            if index >= MIN_BATCH_NORM_BATCHES and time.monotonic() + batch_s > deadline:
                return
            begun = time.monotonic()
            counted.append(index)
            yield self.data.batch(
                self.state.rng, self.network, self.device, self.memory_format, statistics=True
            ).inputs
            batch_s = time.monotonic() - begun

    def _save(self, checkpointer: Checkpointer) -> None:
        begun = time.monotonic()
        self._check_finite(checkpointer.folder)
        self.run_state.elapsed_s = self.schedule.elapsed()
        checkpointer.save(self.run_state, self.state)
        self.schedule.closing.save_s = time.monotonic() - begun

    def _model(self, network: UNet) -> Model:
        return Model(self.description, network)

    def _finished(self, network: UNet, metrics: dict[str, float]) -> Model:
        """Copy the network to the CPU in eval mode, its card carrying the validation metrics."""
        copy = UNet(self.description.architecture)
        copy.load_state_dict(_cpu_copy(network.state_dict()))
        copy.eval()
        card = ModelDescription.from_dict(self.description.to_dict())
        card.metrics = {"validation": dict(metrics)}
        card.provenance = {**card.provenance, "epochs_trained": self.run_state.epoch}
        return Model(card, copy)

    def _check_finite(self, folder: Any) -> None:
        """Refuse to checkpoint or validate weights that a step has made NaN or infinite."""
        if not all(torch.isfinite(value).all() for value in self.network.parameters()):
            raise self._diverged("weights", folder)

    def _diverged(self, what: str, folder: Any) -> Exception:
        """Return the error that stops a run gone non-finite; what is on disk predates it."""
        run = self.run_state
        kept = (
            f"; the last good checkpoint stays in {folder} (resume=True continues from it)"
            if folder is not None
            else ""
        )
        return FloatingPointError(
            f"training stopped: the {what} became NaN or infinite at epoch {run.epoch + 1}, "
            f"step {run.step + 1}{kept}. The data were checked for NaN and infinity, so try a "
            f"lower learning rate than {self.learning_rate:g}"
        )


def _loss(logits: torch.Tensor, batch: Batch, name: LossName) -> torch.Tensor:
    """Return the class loss, plus that of the outputs after the classes (distance or flows)."""
    if batch.distance is None:
        return segmentation_loss(logits, batch.target, batch.weights, name)
    count = len(INSTANCE_CLASSES)
    classes = segmentation_loss(logits[:, :count], batch.target, batch.weights, name)
    return classes + regression_loss(logits[:, count:], batch.distance, batch.target)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}
