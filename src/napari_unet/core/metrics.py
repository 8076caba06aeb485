"""Segmentation quality: pixel classes, matched object instances, and membrane (Rand/VI) scores.

Instance scores follow the DSB 2018 definition: predicted and true objects are matched one to
one when their IoU exceeds a threshold (above 0.5 a match is necessarily unique), and
``AP = TP / (TP + FP + FN)``; the mean over thresholds 0.5, 0.55, ..., 0.95 is the mAP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error, variation_of_information

IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` pixel counts, rows = true class, columns = predicted class.

    True values must be class numbers: instance masks (one label per object) are refused.
    """
    if truth.size and (truth.min() < 0 or truth.max() >= n_classes):
        raise ValueError(
            f"masks hold values {truth.min()} to {truth.max()}, but the model has {n_classes} "
            f"classes (0 to {n_classes - 1}); instance masks (one label per object) need an "
            "instances model"
        )
    return _pair_counts(truth, prediction, n_classes, n_classes)


def class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class IoU and Dice from a confusion matrix (NaN for a class absent in both)."""
    hits = np.diag(confusion).astype(np.float64)
    true_count, predicted_count = confusion.sum(1), confusion.sum(0)
    union = true_count + predicted_count - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "iou": np.where(union > 0, hits / union, np.nan),
            "dice": np.where(union > 0, 2 * hits / (true_count + predicted_count), np.nan),
        }


def pairwise_iou(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows, labels 1..) with every predicted object (columns)."""
    true_ids, true_inverse = np.unique(truth, return_inverse=True)
    pred_ids, pred_inverse = np.unique(prediction, return_inverse=True)
    overlap = _pair_counts(true_inverse, pred_inverse, true_ids.size, pred_ids.size)
    true_sizes, pred_sizes = overlap.sum(1, keepdims=True), overlap.sum(0, keepdims=True)
    iou = overlap / np.maximum(true_sizes + pred_sizes - overlap, 1)
    return iou[np.ix_(true_ids > 0, pred_ids > 0)]


def _pair_counts(rows: np.ndarray, columns: np.ndarray, n_rows: int, n_columns: int) -> np.ndarray:
    """Count each ``(row, column)`` index pair: a contingency table."""
    flat = rows.astype(np.int64).ravel() * n_columns + columns.astype(np.int64).ravel()
    return np.bincount(flat, minlength=n_rows * n_columns).reshape(n_rows, n_columns)


def matching(
    truth: np.ndarray, prediction: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS
) -> dict[float, dict[str, float]]:
    """Per IoU threshold: TP, FP, FN, precision, recall, F1 and AP = TP / (TP + FP + FN).

    A true and a predicted object match when their IoU is strictly above the threshold; at
    0.5 and above each object can overlap at most one other that much, so matching is one to
    one without any assignment step.
    """
    if min(thresholds) < 0.5:
        raise ValueError("IoU thresholds below 0.5 need an assignment step; use 0.5 or above")
    iou = pairwise_iou(truth, prediction)
    n_true, n_pred = iou.shape
    results = {}
    for threshold in thresholds:
        tp = int((iou > threshold).sum())
        fp, fn = n_pred - tp, n_true - tp
        results[float(threshold)] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": tp / n_pred if n_pred else float(n_true == 0),
            "recall": tp / n_true if n_true else float(n_pred == 0),
            "f1": 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0,
            "ap": tp / (tp + fp + fn) if (tp + fp + fn) else 1.0,
        }
    return results


def instance_scores(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """AP at 0.5, mAP over 0.5:0.95, and precision / recall / F1 at 0.5 for one image."""
    per_threshold = matching(truth, prediction)
    at_half = per_threshold[0.5]
    return {
        "ap50": at_half["ap"],
        "map": float(np.mean([scores["ap"] for scores in per_threshold.values()])),
        "precision50": at_half["precision"],
        "recall50": at_half["recall"],
        "f1_50": at_half["f1"],
    }


def membrane_scores(truth_cells: np.ndarray, predicted_cells: np.ndarray) -> dict[str, float]:
    """Adapted Rand error and variation of information between two cell segmentations.

    Both inputs hold one label per cell with 0 on membranes; like the ISBI 2012 challenge,
    the Rand error ignores pixels that are membrane in the truth.
    """
    error, _, _ = adapted_rand_error(truth_cells, predicted_cells, ignore_labels=(0,))
    split, merge = variation_of_information(truth_cells, predicted_cells, ignore_labels=(0,))
    return {
        "rand_error": float(error),
        "vi_split": float(split),
        "vi_merge": float(merge),
        "vi": float(split + merge),
    }


def cells_from_interior(interior: np.ndarray) -> np.ndarray:
    """Label the connected interior regions (4-connected in 2D) between membranes."""
    labels, _ = ndi.label(interior)
    return labels
