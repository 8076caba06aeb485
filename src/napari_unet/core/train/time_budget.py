"""How long a training run lasts, and the time a budget keeps back for what follows the epochs.

A ``minutes`` budget covers the whole ``train`` call, not just its epochs: weight averaging,
batch-norm re-estimation, validation, threshold calibration, the fine-tuning check and
saving come after the last step, and they used to add a minute or more to a one-minute
budget (issue 22). So the epochs stop early enough for them, by an estimate made from what
the run itself measures: its steps, its validation passes, its saves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from napari_unet.core.train.averaging import BATCH_NORM_BATCHES, MIN_BATCH_NORM_BATCHES

CLOSING_MARGIN = 1.3
"""The closing phases are estimated from single measurements; this covers their spread."""
MIN_TRAINING_SHARE = 0.5
"""The epochs get at least this share of a budget, however long the closing phases look."""
BATCH_NORM_SHARE = 0.08
"""At most this share of a budget re-estimates the averaged network's batch-norm statistics."""
FORWARD_SHARE_OF_STEP = 0.5
"""One batch-norm batch (a patch draw and an fp32 forward pass) against one training step."""


@dataclass
class ClosingWork:
    """The work after the epochs, and the measured seconds its duration is estimated from."""

    averaging: bool = False
    validations: int = 0
    """Passes over the validation images after the epochs (the averaged network, calibration)."""
    checks: int = 0
    """Passes over held-out painted objects after the epochs (the fine-tuned model's score)."""
    saves: int = 3
    step_s: float = 0.0
    validation_s: float = 0.0
    check_s: float = 0.0
    save_s: float = 0.0

    def note_step(self, seconds: float) -> None:
        """Fold one step's duration into the running estimate.

        Measured from one step's start to the next, so the epochs' ends (saves, validation)
        are in it too.
        """
        self.step_s = seconds if self.step_s == 0.0 else 0.8 * self.step_s + 0.2 * seconds

    def batch_norm_s(self, budget_s: float | None) -> float:
        """Seconds to spend re-estimating batch-norm statistics (0 without averaging).

        :data:`BATCH_NORM_BATCHES` batches, or the budget's share for them, but never less
        than the :data:`MIN_BATCH_NORM_BATCHES` that are always measured.
        """
        if not self.averaging:
            return 0.0
        batch_s = FORWARD_SHARE_OF_STEP * self.step_s
        wanted = BATCH_NORM_BATCHES * batch_s
        if budget_s is not None:
            wanted = min(BATCH_NORM_SHARE * budget_s, wanted)
        return max(MIN_BATCH_NORM_BATCHES * batch_s, wanted)

    def seconds(self, budget_s: float | None) -> float:
        """Estimated duration of everything after the last step, with a safety margin."""
        passes = self.validations * self.validation_s + self.checks * self.check_s
        return CLOSING_MARGIN * (self.batch_norm_s(budget_s) + passes + self.saves * self.save_s)


@dataclass
class Schedule:
    """How long a run lasts (epochs, or a time budget) and its learning-rate factor over it.

    With a budget, ``started`` is when the ``train`` call began, so data preparation counts,
    and the epochs end when only the closing phases' estimated time is left.
    """

    epochs: int
    steps_per_epoch: int
    budget_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    elapsed_before: float = 0.0
    closing: ClosingWork = field(default_factory=ClosingWork)

    def elapsed(self) -> float:
        """Seconds so far, including earlier processes of a resumed run."""
        return self.elapsed_before + time.monotonic() - self.started

    def training_s(self) -> float | None:
        """Seconds of the budget the epochs may use (None without a budget)."""
        if self.budget_s is None:
            return None
        kept = self.closing.seconds(self.budget_s)
        return max(MIN_TRAINING_SHARE * self.budget_s, self.budget_s - kept)

    def done(self, step: int) -> float:
        """Share of the epochs done after ``step`` optimiser steps, 0 to 1 (time or steps)."""
        by_steps = step / max(1, self.epochs * self.steps_per_epoch)
        training_s = self.training_s()
        if training_s is not None:
            by_steps = max(by_steps, self.elapsed() / training_s)
        return min(1.0, by_steps)

    def share_of_call(self, step: int) -> float:
        """Share of the whole call done, for progress bars: of the budget, else of the steps."""
        if self.budget_s is None:
            return self.done(step)
        return min(1.0, self.elapsed() / self.budget_s)

    def over(self, step: int) -> bool:
        """Whether the epochs have used their steps, or the next step would end past their time.

        Checked before each step: a step begun just before the deadline used to end a whole
        step (and its epoch's end) after it.
        """
        if step >= self.epochs * self.steps_per_epoch:
            return True
        training_s = self.training_s()
        return training_s is not None and self.elapsed() + self.closing.step_s > training_s

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
