"""Measure a model on labelled images with the metrics users and papers compare by."""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.metrics import (
    cells_from_interior,
    class_scores,
    confusion_matrix,
    instance_scores,
    membrane_scores,
)
from napari_unet.core.models.registry import CARD_FILE, Model
from napari_unet.core.predict.postprocess import object_labeller
from napari_unet.core.predict.predictor import Predictor
from napari_unet.core.train.datasets import LabelledImage, object_ids, read_pairs
from napari_unet.names import DEFAULT_MODEL


def validation_metrics(
    model: Model, items: Sequence[LabelledImage], device: str = "cpu"
) -> dict[str, float]:
    """Score each epoch; ``score`` (AP@0.5 for instances, else mean IoU) picks the best model.

    Images go through the :class:`Predictor` as users' images will (normalisation, channels,
    tiling), in fp32 so that the choice of the best epoch does not depend on the hardware.
    """
    predictor = Predictor(model, device=device, precision="fp32")
    probabilities = [
        predictor.predict(item.source, axes=item.axes, output="probabilities") for item in items
    ]
    description = model.description
    if description.output_kind == "instances":
        masks = [item.mask for item in items]
        summary = _instance_summary(model, probabilities, masks, [item.sparse for item in items])
        return {"ap50": summary["ap50"], "map": summary["map"], "score": summary["ap50"]}
    n_classes = description.architecture.out_channels
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    for item, probs in zip(items, probabilities, strict=True):
        annotated = item.target >= 0
        predicted = probs.argmax(axis=0)
        confusion += confusion_matrix(item.target[annotated], predicted[annotated], n_classes)
    iou = class_scores(confusion)["iou"]
    metrics = {
        f"iou_{name}": float(value)
        for name, value in zip(description.class_names, iou, strict=True)
    }
    metrics["score"] = float(np.nanmean(iou))
    return metrics


def evaluate(
    images: str | os.PathLike[str] | Sequence[np.ndarray],
    masks: str | os.PathLike[str] | Sequence[np.ndarray],
    model: str | os.PathLike[str] | Model = DEFAULT_MODEL,
    *,
    groups: Sequence[str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Score ``model`` on labelled images; per group (e.g. modality) too when ``groups`` is given.

    The arguments come in :func:`~napari_unet.segment`'s order (data, then model). Instance
    models get the DSB 2018 scores (AP at IoU 0.5 and mAP over 0.5:0.95, averaged over images,
    plus precision, recall and F1 at 0.5). Semantic models get pixel error, per-class IoU and
    Dice, and the adapted Rand error and variation of information of the regions of non-first
    classes (the cells between membranes, for an EM membrane model). The order of earlier
    versions, ``evaluate(model, images, masks)``, still works with a ``DeprecationWarning``.
    """
    if _model_first(images, model):
        warnings.warn(
            "evaluate(model, images, masks) is deprecated: pass evaluate(images, masks, model), "
            "the order of segment(image, model)",
            DeprecationWarning,
            stacklevel=2,
        )
        images, masks, model = masks, model, images
    predictor = Predictor(model, device=device)
    model = predictor.model
    images, masks = read_pairs(images, masks)
    probabilities = [_probabilities(predictor, image) for image in images]
    score = _semantic_summary
    if model.description.output_kind == "instances":
        score = _instance_summary
        masks = [object_ids(mask, f"mask {index}") for index, mask in enumerate(masks)]
    results = {"overall": score(model, probabilities, masks)}
    if groups is not None:
        for group in sorted(set(groups)):
            chosen = [i for i, name in enumerate(groups) if name == group]
            results[group] = score(
                model, [probabilities[i] for i in chosen], [masks[i] for i in chosen]
            )
    return results


def _model_first(images: Any, model: Any) -> bool:
    """Whether a call used the old order: a model where images go, images where the model goes."""
    if isinstance(images, Model):
        return True
    if isinstance(model, Model) or not isinstance(model, str | os.PathLike):
        return not isinstance(model, Model)  # a list of arrays in the model's place
    return Path(model).is_dir() and not (Path(model) / CARD_FILE).is_file()


def tune_instance_postprocess(
    model: Model,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    device: str = "auto",
) -> dict[str, Any]:
    """Pick the instance thresholds with the best mean AP@0.5 (then mAP) on labelled images.

    Foreground and seed thresholds are searched together (flows models have no seeds: their
    foreground threshold alone, then how far pixels follow the flows), then the minimum size;
    class-balanced training tends to widen the foreground, so high thresholds are included.
    Probabilities are computed in fp32, so the choice does not depend on the hardware.
    """
    predictor = Predictor(model, device=device, precision="fp32")
    probabilities = [_probabilities(predictor, image) for image in images]

    def quality(params: dict[str, Any]) -> tuple[float, float]:
        tuned = Model(_with_postprocess(model, params), model.network)
        summary = _instance_summary(tuned, probabilities, list(masks))
        return summary["ap50"], summary["map"]

    defaults = object_labeller(model.description)[1]
    seeds = TUNING_GRID["seed"] if "seed_threshold" in defaults else ()
    thresholds = [
        {"foreground_threshold": foreground, "min_size": 16}
        | ({"seed_threshold": seed} if seed is not None else {})
        for foreground, seed in itertools.product(TUNING_GRID["foreground"], seeds or (None,))
    ]
    best = max(thresholds, key=quality)
    if "flow_steps" in defaults:  # about the objects' radius: it depends on the images
        best = max(({**best, "flow_steps": n} for n in TUNING_GRID["flow_steps"]), key=quality)
    sizes = [{**best, "min_size": size} for size in TUNING_GRID["min_size"]]
    return max(sizes, key=quality)


def calibrate_binary_decision(
    model: Model, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
) -> float:
    """Shift a two-class model's output bias to the pixel-accuracy-optimal decision; return it.

    Class-balanced losses (the paper's weight map) bias a network toward the rarer class,
    which costs pixel accuracy and IoU when labels are read by argmax. Adding the best logit
    offset to the last layer's bias undoes that prior in the weights themselves, so every
    front end gets the calibrated decision.
    """
    head = model.network.head
    if head.bias is None or head.out_channels != 2:
        raise ValueError("calibration needs a two-class model whose last layer has a bias")
    predictor = Predictor(model, precision="fp32")
    margins, truths = [], []
    for image, mask in zip(images, masks, strict=True):
        probs = _probabilities(predictor, image)
        margins.append(np.log(probs[1] + 1e-7) - np.log(probs[0] + 1e-7))
        truths.append(mask > 0)
    margin, truth = (
        np.concatenate([m.ravel() for m in margins]),
        np.concatenate([t.ravel() for t in truths]),
    )
    offsets = np.round(np.arange(-3.0, 3.01, 0.1), 2)
    accuracy = [np.mean((margin + offset > 0) == truth) for offset in offsets]
    best = float(offsets[int(np.argmax(accuracy))])
    with torch.no_grad():
        head.bias[1] += best / 2
        head.bias[0] -= best / 2
    return best


TUNING_GRID = {
    "foreground": (0.5, 0.6, 0.7, 0.8, 0.9),
    "seed": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "min_size": (8, 16, 32, 48, 64),
    "flow_steps": (25, 50, 100),
}


def _with_postprocess(model: Model, params: dict[str, Any]) -> Any:
    card = type(model.description).from_dict(model.description.to_dict())
    card.postprocess = dict(params)
    return card


def _probabilities(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """Predict as users do: through the engine, which also matches colour to the model."""
    return predictor.predict(image, output="probabilities")


def image_scores(
    model: str | os.PathLike[str] | Model,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
) -> list[dict[str, float]]:
    """Instance scores of every image (for paired comparisons of two models on one set)."""
    predictor = Predictor(model)
    probabilities = [_probabilities(predictor, image) for image in images]
    return _instance_scores(predictor.model, probabilities, list(masks))


def _instance_scores(
    model: Model,
    probabilities: list[np.ndarray],
    masks: list[np.ndarray],
    sparse: Sequence[bool] | None = None,
) -> list[dict[str, float]]:
    label, thresholds = object_labeller(model.description)
    scores = []
    for index, (probs, mask) in enumerate(zip(probabilities, masks, strict=True)):
        predicted = label(probs, **thresholds)
        if sparse is not None and sparse[index]:
            mask, predicted = painted_only(mask, predicted)
        scores.append(instance_scores(mask, predicted))
    return scores


def painted_only(mask: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Restrict scoring to what a sparse mask says: its painted objects and painted background.

    The true objects are the labels ``>= 2``; a predicted object counts when it touches one
    of them or lies mostly on painted pixels (e.g. a false object on painted background).
    Objects found where nothing was painted are neither right nor wrong, so they are dropped.
    """
    truth = np.where(mask >= 2, mask, 0)
    painted = np.bincount(predicted.ravel(), weights=(mask > 0).ravel())
    sizes = np.bincount(predicted.ravel())
    mostly_painted = np.flatnonzero(painted >= 0.5 * np.maximum(sizes, 1))
    kept = np.union1d(np.unique(predicted[truth > 0]), mostly_painted)
    kept = kept[kept > 0]
    return truth, np.where(np.isin(predicted, kept), predicted, 0)


def _instance_summary(
    model: Model,
    probabilities: list[np.ndarray],
    masks: list[np.ndarray],
    sparse: Sequence[bool] | None = None,
) -> dict[str, float]:
    scores = _instance_scores(model, probabilities, masks, sparse)
    summary = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
    summary["n_images"] = len(scores)
    return summary


def _semantic_summary(
    model: Model, probabilities: list[np.ndarray], masks: list[np.ndarray]
) -> dict[str, float]:
    names = model.description.class_names
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    membrane = []
    for probs, mask in zip(probabilities, masks, strict=True):
        predicted = probs.argmax(axis=0)
        confusion += confusion_matrix(mask, predicted, len(names))
        membrane.append(
            membrane_scores(cells_from_interior(mask > 0), cells_from_interior(predicted > 0))
        )
    per_class = class_scores(confusion)
    summary = {"pixel_error": float(1 - np.trace(confusion) / confusion.sum())}
    for name, iou, dice in zip(names, per_class["iou"], per_class["dice"], strict=True):
        summary[f"iou_{name}"], summary[f"dice_{name}"] = float(iou), float(dice)
    for key in membrane[0]:
        summary[key] = float(np.mean([m[key] for m in membrane]))
    summary["n_images"] = len(probabilities)
    return summary
