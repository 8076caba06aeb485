"""The options of a training run: one frozen, validated object, and its fine-tuning defaults.

:class:`TrainOptions` is what :func:`~napari_unet.core.train.train` takes (whole, or its
fields as keywords); ``napari-unet train`` builds its flags from the fields' metadata and the
napari Train dock its tooltips, as for prediction
(:mod:`napari_unet.core.predict.options`). What changes when a model is fine-tuned rather
than trained from scratch is decided once, in :meth:`TrainOptions.for_run`. Importing this
module loads neither torch nor the engine (the CLI reads it for ``--help``).
"""

from __future__ import annotations

import math
import numbers
import reprlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from napari_unet.core.option_table import check_choice, describe_option, is_number, with_changes
from napari_unet.core.predict.options import PRECISIONS, whole_numbers
from napari_unet.names import LOSSES, REPRESENTATIONS, TARGETS, LossName, Representation, Target

if TYPE_CHECKING:
    from napari_unet.core.train.augment import Augmenter

NEW_MODEL_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4
"""Default learning rates; fine-tuning moves learned weights less (see docs/training.md)."""
FINE_TUNE_ZOOM = 1.25
"""Fine-tuning zooms patches by up to this factor: one image shows one size of object."""
FINE_TUNE_AVERAGE = 0.5
"""Fine-tuning averages the weights of this last share of the run (steadier than its end)."""
DEFAULT_EPOCHS = 50
"""Epochs of a run given neither ``epochs`` nor ``minutes``."""


@dataclass(frozen=True)
class TrainOptions:
    """How to train: checked when made; ``None`` means "the default for this run".

    Defaults that depend on whether a model is fine-tuned (learning rate, weight map, weight
    averaging, frozen contracting path, zoom, re-tuned thresholds) are filled in by
    :meth:`for_run`, the one place that decides them (docs/training.md says why each).
    """

    target: Target = field(
        default="instances",
        metadata=describe_option(
            "--target",
            "instances (one label per object) or semantic (a class per pixel)",
            choices=TARGETS,
        ),
    )
    representation: Representation | None = field(
        default=None,
        metadata=describe_option(
            "--representation",
            "instances: distance (a distance-to-outline output; generalises better to other "
            "kinds of images), flows (vectors to each object's centre) or boundaries (three "
            "classes); default: the --from model's, else boundaries",
            choices=REPRESENTATIONS,
        ),
    )
    epochs: int | None = field(
        default=None, metadata=describe_option("--epochs", "passes (default 50)", "N")
    )
    minutes: float | None = field(
        default=None,
        metadata=describe_option(
            "--minutes",
            "train for this long instead, saving included (e.g. 5 to fine-tune on 1-3 images)",
            "MIN",
        ),
    )
    steps_per_epoch: int | None = field(
        default=None,
        metadata=describe_option(
            "--steps-per-epoch", "optimiser steps per epoch (default: the pixels once)", "N"
        ),
    )
    patch_shape: int | tuple[int, ...] | None = field(
        default=None,
        metadata=describe_option(
            "--patch",
            "patch size in pixels per axis (default 256, or 32,128,128 in 3D)",
            "PX",
            sizes=True,
        ),
    )
    batch_size: int = field(
        default=8, metadata=describe_option("--batch-size", "patches a step", "N")
    )
    val_fraction: float = field(
        default=0.2,
        metadata=describe_option(
            "--val-fraction", "share of the images held out for validation", "SHARE"
        ),
    )
    learning_rate: float | None = field(
        default=None,
        metadata=describe_option(
            "--learning-rate", "peak learning rate (default 1e-3, or 1e-4 with --from)", "LR"
        ),
    )
    loss: LossName = field(
        default="ce+dice",
        metadata=describe_option("--loss", "ce, dice or ce+dice (the default)", choices=LOSSES),
    )
    weight_map: bool | None = field(
        default=None,
        metadata=describe_option(
            "--weight-map",
            "the paper's border weights (default: on with --from, off for a new network)",
        ),
    )
    sparse: bool = field(
        default=False, metadata=describe_option("--sparse", "mask value 0 = not annotated")
    )
    augment: bool | Augmenter = field(
        default=True,
        metadata=describe_option(
            "--augment", "flips, rotations, elastic deformation, intensity (on by default)"
        ),
    )
    average_weights: float | None = field(
        default=None,
        metadata=describe_option(
            "--average-weights",
            "average the weights of this share of the last epochs or minutes "
            "(default: 0.5 with --from, else off)",
            "SHARE",
        ),
    )
    freeze_encoder: bool | None = field(
        default=None,
        metadata=describe_option(
            "--freeze-encoder", "train the expanding path only (default: on with --from)"
        ),
    )
    calibrate: bool | None = field(
        default=None,
        metadata=describe_option(
            "--calibrate",
            "tune the instance thresholds on held-out images once trained (default: when "
            "fine-tuning with validation images); --no-calibrate keeps the --from model's",
        ),
    )
    holdout_objects: float | None = field(
        default=None,
        metadata=describe_option(
            "--holdout-objects",
            "with --from and no validation images: keep this share of the objects out of "
            "training to check the result (default 0.2, from 8 objects; 0 to train on all)",
            "SHARE",
        ),
    )
    rehearsal_share: float = 0.25
    """Share of every batch drawn from ``rehearsal`` images, when given."""
    seed: int = field(default=0, metadata=describe_option("--seed", "random seed", "N"))
    device: str = field(
        default="auto", metadata=describe_option("--device", "auto (cuda > mps > cpu), cpu, cuda")
    )
    precision: str = field(
        default="auto",
        metadata=describe_option(
            "--precision",
            "auto (bf16 on CPUs with bf16 hardware and on CUDA, else fp32), fp32, bf16, fp16",
            choices=PRECISIONS,
        ),
    )
    resume: bool = field(
        default=False,
        metadata=describe_option("--resume", "continue from the last checkpoint"),
    )
    name: str = "my-model"
    """The model's name (the CLI's default: the name of its output folder)."""
    class_names: tuple[str, ...] | None = None
    """Semantic class names (default ``class 0``, ``class 1``...)."""
    normalization: dict[str, Any] | None = None
    """Input normalisation of a new model; when fine-tuning, only the keys given change."""
    checkpoint_interval_s: float = 300.0
    """Seconds between checkpoints (and one every epoch)."""

    def __post_init__(self) -> None:
        checks = {
            "target": check_choice(self.target, TARGETS, "target"),
            "representation": None
            if self.representation is None
            else check_choice(self.representation, REPRESENTATIONS, "representation"),
            "epochs": _count(self.epochs, "epochs", minimum=0),  # 0: the starting model
            "minutes": _positive(self.minutes, "minutes"),
            "steps_per_epoch": _count(self.steps_per_epoch, "steps_per_epoch"),
            "patch_shape": whole_numbers(self.patch_shape, "patch_shape/--patch", 1),
            "batch_size": _count(self.batch_size, "batch_size"),
            "val_fraction": _share(self.val_fraction, "val_fraction", closed=False),
            "learning_rate": _positive(self.learning_rate, "learning_rate"),
            "loss": check_choice(self.loss, LOSSES, "loss"),
            "average_weights": _share(self.average_weights, "average_weights"),
            "holdout_objects": _share(self.holdout_objects, "holdout_objects", closed=False),
            "rehearsal_share": _share(self.rehearsal_share, "rehearsal_share", closed=False),
            "precision": check_choice(self.precision, PRECISIONS, "precision"),
            "checkpoint_interval_s": _positive(self.checkpoint_interval_s, "checkpoint_interval_s"),
            "class_names": None if self.class_names is None else tuple(self.class_names),
        }
        for name, value in checks.items():
            object.__setattr__(self, name, value)
        if self.calibrate and self.sparse:
            raise ValueError(
                "calibrate=True needs fully labelled masks: with sparse masks, objects found "
                "where nothing was painted would count as false"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainOptions:
        """Build from keywords, refusing names that are not options (a typo is not ignored)."""
        return with_changes(cls, None, values, "training")

    def for_run(self, fine_tuning: bool, validating: bool) -> TrainOptions:
        """Fill in the defaults that depend on the run: fine-tuning, and validation images.

        Fine-tuning (docs/training.md, "Fine-tuning"): learning rate 1e-4, the paper's weight
        map, weights of the second half averaged, the contracting path frozen, zoom
        augmentation, and thresholds re-tuned only on held-out images.
        """
        instances = self.target == "instances"
        calibrate = self.calibrate
        if calibrate is None:  # tuned on the images trained on, they do not carry over
            calibrate = fine_tuning and instances and not self.sparse and validating
        augment = self.augment
        if augment is True:
            from napari_unet.core.train.augment import Augmenter

            augment = Augmenter(zoom_range=FINE_TUNE_ZOOM if fine_tuning else 1.0)
        return replace(
            self,
            learning_rate=self.learning_rate
            or (FINE_TUNE_LEARNING_RATE if fine_tuning else NEW_MODEL_LEARNING_RATE),
            weight_map=fine_tuning if self.weight_map is None else self.weight_map,
            average_weights=(FINE_TUNE_AVERAGE if fine_tuning else 0.0)
            if self.average_weights is None
            else self.average_weights,
            freeze_encoder=fine_tuning if self.freeze_encoder is None else self.freeze_encoder,
            calibrate=bool(calibrate) and instances,
            augment=augment,
            epochs=self.epochs
            if self.epochs is not None
            else (DEFAULT_EPOCHS if self.minutes is None else 1_000_000),
        )


def with_train_options(options: TrainOptions | None, changes: dict[str, Any]) -> TrainOptions:
    """``options`` (or the defaults) with the keywords a call gave on top, checked again."""
    return with_changes(TrainOptions, options, changes, "training")


def _count(value: Any, name: str, minimum: int = 1) -> int | None:
    """Check a count: a whole number of at least ``minimum``, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(
            f"{name} must be a whole number of at least {minimum}; not {reprlib.repr(value)}"
        )
    return int(value)


def _positive(value: Any, name: str) -> float | None:
    """Check a finite number above 0, or ``None``."""
    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; not {reprlib.repr(value)}")
    return float(value)


def _share(value: Any, name: str, closed: bool = True) -> float | None:
    """Check a share from 0 to 1 (below 1 unless ``closed``), or ``None``."""
    if value is None:
        return None
    if not is_number(value) or not (0 <= value <= 1) or (not closed and value == 1):
        bound = "1" if closed else "below 1"
        raise ValueError(f"{name} must be a share from 0 to {bound}; not {reprlib.repr(value)}")
    return float(value)
