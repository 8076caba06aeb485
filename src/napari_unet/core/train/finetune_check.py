"""Did fine-tuning help? The base model and the result, scored on labels the run never trained on.

A fine-tune on one or two images can make a model worse on other images (issue 22: 0.627 for
the base against 0.572 after), so every fine-tune scores both on held-out labels, held-out
images or painted objects kept back from training, and says plainly which is better. The
figures go into the saved model's card, whose description then names the base, the data, the
date and the scores.
"""

from __future__ import annotations

import datetime
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_unet.core.models.registry import ModelDescription
from napari_unet.core.train.datasets import LabelledImage
from napari_unet.core.train.training_data import MIN_OBJECTS_TO_HOLD_OUT

INSTANCE_METRIC, SEMANTIC_METRIC = "AP@0.5", "mean IoU"
GIVE_VALIDATION_IMAGES = "give validation images (--val-images/--val-masks; validation= in Python)"
HOLD_OUT_OBJECTS = (
    f"paint at least {MIN_OBJECTS_TO_HOLD_OUT} objects (a fifth of them are then held out for "
    "the check)"
)


@dataclass(frozen=True)
class CheckData:
    """Labelled data kept out of training, and how to name it in reports."""

    items: list[LabelledImage]
    what: str
    """E.g. "2 held-out images" or "9 held-out painted objects"."""
    validation: bool
    """Whether these are the run's validation images (scored after every epoch anyway)."""


@dataclass
class FineTuneReport:
    """The base model's and the fine-tuned model's score on the same held-out labels."""

    base: str
    metric: str
    held_out: str = ""
    base_score: float | None = None
    score: float | None = None

    @property
    def verdict(self) -> str:
        """``"better"``, ``"worse"``, ``"same"``, or ``"unchecked"`` without held-out labels."""
        if self.base_score is None or self.score is None:
            return "unchecked"
        if np.isclose(self.score, self.base_score, rtol=0.0, atol=1e-9):
            return "same"
        return "better" if self.score > self.base_score else "worse"

    def summary(self) -> str:
        """One line for the CLI, the widget and the card."""
        if self.verdict == "unchecked":
            how = GIVE_VALIDATION_IMAGES
            if self.metric == INSTANCE_METRIC:  # only objects can be held out of a painting
                how = f"{HOLD_OUT_OBJECTS}, or {how}"
            return f"whether fine-tuning helped cannot be checked: nothing was held out; {how}"
        outcome = {
            "worse": f"WORSE than {self.base}; keep using {self.base} for images like these",
            "better": f"better than {self.base}",
            "same": f"the same as {self.base}",
        }[self.verdict]
        return (
            f"{self.metric} on {self.held_out}: {self.base} {self.base_score:.3f}, "
            f"fine-tuned {self.score:.3f}: {outcome}"
        )

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> FineTuneReport | None:
        """Read the report back from a card's metrics; None for a model not fine-tuned."""
        saved = metrics.get("fine_tuning")
        if not isinstance(saved, dict):
            return None
        return cls(
            **{key: saved.get(key) for key in ("base", "metric", "held_out", "base_score", "score")}
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the card's ``metrics["fine_tuning"]``."""
        return {**asdict(self), "verdict": self.verdict}

    def warn_if_worse(self) -> None:
        """Warn (the CLI prints it) when the fine-tuned model scored below its base."""
        if self.verdict == "worse":
            warnings.warn(f"fine-tuning made the model worse: {self.summary()}", stacklevel=3)


def describe_training(
    card: ModelDescription,
    base: str | None,
    masks: list[np.ndarray],
    sparse: bool,
    report: FineTuneReport | None,
    validation: dict[str, float],
) -> str:
    """Write the saved model's own description: its start, its data, the date, figures.

    The first sentence (what ``napari-unet models`` lists) holds them all.
    """
    count = f"{len(masks)} image{'s' if len(masks) != 1 else ''}"
    if card.output_kind == "instances":
        first_object = 2 if sparse else 1
        objects = sum(int(np.count_nonzero(np.unique(mask) >= first_object)) for mask in masks)
        count += f", {objects} objects"
    origin = f"Fine-tuned from {base}" if base is not None else "Trained from scratch"
    first = f"{origin} on {count}, {datetime.date.today().isoformat()}"
    if report is not None:
        return f"{first}; {report.summary()}."
    if "score" in validation:
        return f"{first}; validation score {validation['score']:.3f}."
    return f"{first}; not validated (no held-out images)."
