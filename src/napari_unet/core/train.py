"""The training engine: one ``train`` call used by the CLI, the napari widget and scripts.

It is GUI-free: progress goes to a callback, cancellation comes in through a token, and every
few minutes the full state is checkpointed so a run can be resumed after an interruption.
The pieces live in their own modules: data preparation (:mod:`~napari_unet.core.
training_data`), the starting model (:mod:`~napari_unet.core.initial_model`), checkpoints
(:mod:`~napari_unet.core.checkpoint`) and weight averaging (:mod:`~napari_unet.core.
averaging`); this module runs the epochs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_unet.core.augment import Augmenter
from napari_unet.core.averaging import BATCH_NORM_BATCHES, AveragingWindow, WeightAverage
from napari_unet.core.card_checks import check_normalization
from napari_unet.core.checkpoint import BEST_DIR, Checkpointer, RunState, TrainingState
from napari_unet.core.device import autocast, resolve_precision
from napari_unet.core.evaluate import tune_instance_postprocess, validation_metrics
from napari_unet.core.initial_model import initial_model
from napari_unet.core.losses import LossName, distance_loss, segmentation_loss
from napari_unet.core.models import Model, ModelDescription, load_model, save_model
from napari_unet.core.network import UNet, UNetConfig
from napari_unet.core.progress import Cancelled, CancelToken, check_cancelled
from napari_unet.core.targets import Representation, Target
from napari_unet.core.training_data import Batch, Data, TrainingData, read_split

NEW_MODEL_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4
"""Default learning rates; fine-tuning moves learned weights less (see docs/training.md)."""
FINE_TUNE_ZOOM = 1.25
"""Fine-tuning zooms patches by up to this factor: one image shows one size of object."""
FINE_TUNE_AVERAGE = 0.5
"""Fine-tuning averages the weights of this last share of the run (steadier than its end)."""


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
    """Share of the run done, 0 to 1: by steps, or by time for a ``minutes`` budget."""


def train(
    images: Data,
    masks: Data,
    *,
    target: Target = "instances",
    representation: Representation | None = None,
    base_model: str | os.PathLike[str] | Model | None = None,
    architecture: UNetConfig | dict[str, Any] | None = None,
    epochs: int | None = None,
    minutes: float | None = None,
    patch_shape: int | Sequence[int] | None = None,
    batch_size: int = 8,
    val_fraction: float = 0.2,
    validation: tuple[Data, Data] | None = None,
    learning_rate: float | None = None,
    loss: LossName = "ce+dice",
    weight_map: bool | None = None,
    sparse: bool = False,
    augment: bool | Augmenter = True,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    name: str = "my-model",
    progress: Callable[[TrainingProgress], None] | None = None,
    cancel: CancelToken | None = None,
    steps_per_epoch: int | None = None,
    class_names: Sequence[str] | None = None,
    normalization: dict[str, Any] | None = None,
    checkpoint_interval_s: float = 300.0,
    average_weights: float | None = None,
    calibrate: bool | None = None,
    freeze_encoder: bool | None = None,
) -> Model:
    """Train a U-Net on image/mask pairs; return its best validation epoch (or its mean).

    Parameters
    ----------
    images, masks
        Lists of arrays (``YX``, ``YXC`` colour, or ``ZYX`` for a 3D architecture) or two
        folders of TIFF files with the same names.
    target
        ``"instances"``: masks hold one label per object, the model learns background,
        interior and boundary. ``"semantic"``: masks hold a class index per pixel.
    representation
        For instances: ``"distance"`` adds an output that regresses each pixel's distance to
        its object's outline (seeds and watershed then use it), ``"boundaries"`` keeps the
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
        Mask value 0 means "not annotated" and is ignored; see :mod:`napari_unet.core.targets`
        for what the other values mean.
    augment
        Random flips, rotations, elastic deformation and intensity changes (on by default),
        and zoom by up to 1.25x when fine-tuning; an :class:`~napari_unet.core.augment.Augmenter`
        sets the ranges.
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
    progress, cancel
        Called with a :class:`TrainingProgress` after each step and epoch; checked every step,
        raising :class:`~napari_unet.core.progress.Cancelled` (checkpoints stay on disk).
    """
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be a positive time budget, not {minutes}")
    if calibrate and sparse:
        raise ValueError(
            "calibrate=True needs fully labelled masks: with sparse masks, objects found where "
            "nothing was painted would count as false"
        )
    torch.manual_seed(seed)  # first, so that a new network's initial weights are reproducible
    train_pairs, val_pairs = read_split(images, masks, validation, val_fraction, seed)
    model = initial_model(
        base_model,
        architecture,
        target,
        train_pairs[1],
        sparse,
        class_names,
        name,
        representation,
    )
    fine_tuning = base_model is not None
    if weight_map is None:
        weight_map = fine_tuning
    if average_weights is None:
        average_weights = FINE_TUNE_AVERAGE if fine_tuning else 0.0
    augmenter = augment if isinstance(augment, Augmenter) else None
    if augment is True:
        augmenter = Augmenter(zoom_range=FINE_TUNE_ZOOM if fine_tuning else 1.0)
    for weight in model.network.encoders.parameters():
        weight.requires_grad_(not (fine_tuning if freeze_encoder is None else freeze_encoder))
    if normalization is not None:
        check_normalization(normalization)
        # a new model takes these settings; a fine-tuned one changes only the keys given
        kept = {} if base_model is None else model.description.normalization
        model.description.normalization = {**kept, **normalization}
    data = TrainingData.build(
        train_pairs,
        val_pairs,
        model.description,
        model.network,
        target=target,
        sparse=sparse,
        weight_map=weight_map,
        augmenter=augmenter,
        patch_shape=patch_shape,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
    )
    if learning_rate is None:
        learning_rate = NEW_MODEL_LEARNING_RATE if base_model is None else FINE_TUNE_LEARNING_RATE
    schedule = Schedule(
        epochs if epochs is not None else (50 if minutes is None else 1_000_000),
        data.steps_per_epoch,
        None if minutes is None else 60.0 * minutes,
    )
    loop = _Loop(model, data, schedule, loss, learning_rate, seed, device, precision)
    checkpointer = Checkpointer(checkpoint_dir, checkpoint_interval_s)
    result = loop.run(checkpointer, resume, average_weights, progress, cancel)
    if calibrate is None:
        # thresholds tuned on the very images trained on do not carry over to other images
        # (docs/training.md): only held-out labels re-tune them by default
        held_out = bool(val_pairs[0])
        calibrate = base_model is not None and target == "instances" and not sparse and held_out
    if calibrate and target == "instances":
        tuning = val_pairs if val_pairs[0] else train_pairs
        result.description.postprocess = tune_instance_postprocess(result, *tuning, device)
        if checkpointer.folder is not None:
            save_model(result, checkpointer.folder / BEST_DIR, overwrite=True)
    return result


@dataclass
class Schedule:
    """How long a run lasts (epochs, or a time budget) and its learning-rate factor over it."""

    epochs: int
    steps_per_epoch: int
    budget_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    elapsed_before: float = 0.0

    def elapsed(self) -> float:
        """Training seconds so far, including earlier processes of a resumed run."""
        return self.elapsed_before + time.monotonic() - self.started

    def done(self, step: int) -> float:
        """Share of the run done after ``step`` optimiser steps, 0 to 1 (time or steps)."""
        by_steps = step / max(1, self.epochs * self.steps_per_epoch)
        if self.budget_s is not None:
            by_steps = max(by_steps, self.elapsed() / self.budget_s)
        return min(1.0, by_steps)

    def over(self, step: int) -> bool:
        """Whether the run has used its epochs or its time."""
        return self.done(step) >= 1.0 or step >= self.epochs * self.steps_per_epoch

    def factor(self, step: int) -> float:
        """Learning-rate factor: short linear warm-up, then cosine decay to 2 %."""
        if self.budget_s is not None:
            done = self.done(step)
            if done < 0.05:
                return max(0.05, done / 0.05)
            return _cosine_from(min(1.0, (done - 0.05) / 0.95))
        total = self.epochs * self.steps_per_epoch
        warmup = max(1, min(100, total // 20))
        if step < warmup:
            return (step + 1) / warmup
        return _cosine_from(min(1.0, (step - warmup) / max(1, total - warmup)))


def _cosine_from(progress: float) -> float:
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


class _Loop:
    """The epoch loop: optimiser steps, per-epoch validation, best-epoch keeping."""

    def __init__(
        self,
        model: Model,
        data: TrainingData,
        schedule: Schedule,
        loss: LossName,
        learning_rate: float,
        seed: int,
        device: str,
        precision: str,
    ) -> None:
        self.description = model.description
        self.network = model.network
        self.data = data
        self.schedule = schedule
        self.loss = loss
        self.learning_rate = learning_rate
        self.device = _resolve_device(device)
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
            np.random.default_rng(seed),
            None,
        )
        self.run_state = RunState()

    def run(
        self,
        checkpointer: Checkpointer,
        resume: bool,
        average_share: float,
        progress: Callable[[TrainingProgress], None] | None,
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
                    if progress is not None:
                        progress(self._progress(step_loss))
                    if checkpointer.due():
                        self._save(checkpointer)
                metrics = self._end_epoch(checkpointer.folder, averaging)
                self._save(checkpointer)
                if progress is not None:
                    progress(self._progress(metrics["train_loss"], metrics))
        except Cancelled:
            self._save(checkpointer)
            raise
        return self._result(checkpointer)

    def _steps_done(self) -> int:
        return self.run_state.epoch * self.data.steps_per_epoch + self.run_state.step

    def _progress(self, loss: float, metrics: dict[str, float] | None = None) -> TrainingProgress:
        run = self.run_state
        return TrainingProgress(
            run.epoch + (0 if metrics else 1),
            self.schedule.epochs,
            self.data.steps_per_epoch if metrics else run.step,
            self.data.steps_per_epoch,
            loss,
            metrics or {},
            self.schedule.done(self._steps_done()),
        )

    def _step(self, checkpointer: Checkpointer) -> float:
        """One optimiser step on a fresh batch; returns its loss."""
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
        """Validate, keep the best weights, add them to the average; return the metrics."""
        run = self.run_state
        train_loss = run.loss_sum / max(1, run.step)
        self._check_finite(folder)
        if self.state.average is not None and averaging is not None:
            if averaging.includes(run.epoch + 1, self.schedule.done(self._steps_done())):
                self.state.average.update(self.network)
        validating = self.data.validating
        metrics = (
            validation_metrics(self._model(self.network), validating, str(self.device))
            if validating
            else {}
        )
        metrics["train_loss"] = train_loss
        # without validation images the latest epoch counts as the best
        score = (metrics.get("score", 0.0), -train_loss) if validating else (run.epoch, 0.0)
        run.history.append(metrics)
        run.epoch, run.step, run.loss_sum = run.epoch + 1, 0, 0.0
        if score > run.best_score:
            run.best_score, run.best_metrics = score, metrics
            run.best_state = _cpu_copy(self.network.state_dict())
            if folder is not None:
                save_model(self._finished(self.network, metrics), folder / BEST_DIR, overwrite=True)
        return metrics

    def _result(self, checkpointer: Checkpointer) -> Model:
        run, average, folder = self.run_state, self.state.average, checkpointer.folder
        if average is not None and average.count:
            normalising = (
                self.data.batch(
                    self.state.rng, self.network, self.device, self.memory_format
                ).inputs
                for _ in range(min(max(self.data.steps_per_epoch, BATCH_NORM_BATCHES), 50))
            )
            averaged = average.network(normalising)
            validating = self.data.validating
            metrics = (
                validation_metrics(self._model(averaged), validating, str(self.device))
                if validating
                else {}
            )
            metrics["averaged_epochs"] = float(average.count)
            run.best_metrics = metrics
            run.best_state = _cpu_copy(averaged.state_dict())
            if folder is not None:
                save_model(self._finished(averaged, metrics), folder / BEST_DIR, overwrite=True)
        if run.best_state is not None:
            self.network.load_state_dict(run.best_state)
        elif folder is not None and (folder / BEST_DIR).is_dir():
            self.network.load_state_dict(load_model(folder / BEST_DIR).network.state_dict())
        return self._finished(self.network, run.best_metrics)

    def _save(self, checkpointer: Checkpointer) -> None:
        self._check_finite(checkpointer.folder)
        self.run_state.elapsed_s = self.schedule.elapsed()
        checkpointer.save(self.run_state, self.state)

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
    """Return the class loss, plus the distance loss of distance models (their last channel)."""
    if batch.distance is None:
        return segmentation_loss(logits, batch.target, batch.weights, name)
    classes = segmentation_loss(logits[:, :-1], batch.target, batch.weights, name)
    return classes + distance_loss(logits[:, -1], batch.distance, batch.target)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
