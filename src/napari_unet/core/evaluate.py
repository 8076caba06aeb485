"""Measure a model on labelled images with the metrics users and papers compare by."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from napari_unet.core.datasets import LabelledImage
from napari_unet.core.metrics import class_scores, confusion_matrix, instance_scores
from napari_unet.core.models import Model
from napari_unet.core.postprocess import instance_labels


def predict_probabilities(model: Model, image: np.ndarray) -> np.ndarray:
    """Class probabilities ``(K, *spatial)`` of one normalised channels-first image, in one pass.

    The image is mirrored at its border up to a size the network accepts (plus the context
    a valid-padding network consumes), so every pixel gets a prediction.
    """
    network = model.network
    device = next(network.parameters()).device
    same = network.config.padding == "same"
    widths, spatial = [(0, 0)], image.shape[1:]
    for n in spatial:
        before = 0 if same else network.context
        size = network.valid_input_size(n + 2 * before)
        widths.append((before, size - n - before))
    padded = np.pad(image, widths, mode="reflect" if min(spatial) > 1 else "edge")
    was_training = network.training
    network.eval()
    with torch.inference_mode():
        logits = network(torch.from_numpy(padded[np.newaxis]).to(device))
    network.train(was_training)
    probabilities = logits.float().softmax(dim=1)[0].cpu().numpy()
    return probabilities[(slice(None), *[slice(0, n) for n in spatial])]


def validation_metrics(model: Model, items: Sequence[LabelledImage]) -> dict[str, float]:
    """Score each epoch; ``score`` (AP@0.5 for instances, else mean IoU) picks the best model."""
    description = model.description
    if description.output_kind == "instances":
        scores = [
            instance_scores(
                item.mask,
                instance_labels(
                    predict_probabilities(model, item.image), **description.postprocess
                ),
            )
            for item in items
        ]
        ap50 = float(np.mean([s["ap50"] for s in scores]))
        return {"ap50": ap50, "map": float(np.mean([s["map"] for s in scores])), "score": ap50}
    n_classes = description.architecture.out_channels
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    for item in items:
        predicted = predict_probabilities(model, item.image).argmax(axis=0)
        annotated = item.target >= 0
        confusion += confusion_matrix(item.target[annotated], predicted[annotated], n_classes)
    iou = class_scores(confusion)["iou"]
    metrics = {
        f"iou_{name}": float(value)
        for name, value in zip(description.class_names, iou, strict=True)
    }
    metrics["score"] = float(np.nanmean(iou))
    return metrics
