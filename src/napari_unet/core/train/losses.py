"""Segmentation losses that honour ignored pixels and per-pixel weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_unet.core.models.model_types import FLOW_SCALE
from napari_unet.core.train.targets import IGNORE_INDEX
from napari_unet.names import LOSSES, LossName


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over annotated pixels, each scaled by its weight (the paper's loss)."""
    annotated = target != IGNORE_INDEX
    per_pixel = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
    scale = annotated.to(per_pixel.dtype)
    if weights is not None:
        scale = scale * weights
    return (per_pixel * scale).sum() / annotated.sum().clamp(min=1)


def soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """One minus the mean soft Dice over classes present in the batch, on annotated pixels.

    Dice scores each class by overlap rather than pixel count, so thin or rare classes
    (membranes, nucleus boundaries) weigh as much as the background.
    """
    annotated = (target != IGNORE_INDEX).unsqueeze(1).to(logits.dtype)
    probs = logits.softmax(dim=1) * annotated
    one_hot = F.one_hot(target.clamp(min=0), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    one_hot = one_hot * annotated
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    present = one_hot.sum(dims) > 0
    dice = (2 * intersection + eps) / (total + eps)
    if not present.any():
        return logits.sum() * 0
    return 1 - dice[present].mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    loss: LossName = "ce+dice",
) -> torch.Tensor:
    """Compute the training loss by name: weighted cross-entropy, Dice, or their sum."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    value = logits.new_zeros(())
    if "ce" in loss.split("+"):
        value = value + weighted_cross_entropy(logits, target, weights)
    if "dice" in loss.split("+"):
        value = value + soft_dice(logits, target)
    return value


def distance_loss(
    logit: torch.Tensor, distance: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of the distance channel, objects and background weighing equally.

    ``logit`` and ``distance`` (0..1, from :func:`~napari_unet.core.train.targets.center_distance`)
    are ``(N, *spatial)``; pixels ``target`` ignores are skipped. Balancing the two halves keeps
    images with few or small objects from teaching the network that distance is 0 everywhere.
    """
    per_pixel = F.binary_cross_entropy_with_logits(logit, distance, reduction="none")
    annotated = target != IGNORE_INDEX
    inside = annotated & (distance > 0)
    outside = annotated & (distance <= 0)
    halves = [per_pixel[part].mean() for part in (inside, outside) if part.any()]
    return torch.stack(halves).mean() if halves else logit.sum() * 0


def potential_flows(potential: torch.Tensor) -> torch.Tensor:
    """Return unit vectors up the gradient of ``potential`` ``(N, *spatial)``, ``(N, dims, ...)``.

    Central differences, zero outside objects (where the potential is 0) and where the
    gradient vanishes (an object's centre). See :func:`~napari_unet.core.train.targets.
    center_potential`.
    """
    dims = potential.ndim - 1
    padded = F.pad(potential.unsqueeze(1), (1, 1) * dims, mode="replicate")[:, 0]
    inner = [slice(1, -1)] * dims
    gradient = []
    for axis in range(dims):
        ahead, behind = list(inner), list(inner)
        ahead[axis], behind[axis] = slice(2, None), slice(None, -2)
        gradient.append(padded[(slice(None), *ahead)] - padded[(slice(None), *behind)])
    vectors = torch.stack(gradient, dim=1)
    length = vectors.norm(dim=1, keepdim=True)
    inside = (potential > 0).unsqueeze(1) & (length > 1e-3)
    return torch.where(inside, vectors / length.clamp(min=1e-3), torch.zeros_like(vectors))


def flow_loss(
    predicted: torch.Tensor, potential: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Half the mean squared error of flow outputs ``(N, dims, *spatial)`` on annotated pixels.

    The targets are the unit flows of ``potential`` times :data:`FLOW_SCALE`, zero outside
    objects, as in cellpose's training.
    """
    flows = potential_flows(potential.float()) * FLOW_SCALE
    annotated = (target != IGNORE_INDEX).unsqueeze(1).float()
    squared = (predicted.float() - flows) ** 2 * annotated
    return squared.sum() / (annotated.sum() * predicted.shape[1]).clamp(min=1) / 2


def regression_loss(
    extra: torch.Tensor, regression: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Compute the loss of an instance model's outputs after its classes: distance or flows.

    ``extra`` holds one channel for a distance model (:func:`distance_loss`) and one per
    spatial axis for a flows model (:func:`flow_loss`); ``regression`` is its stored target.
    """
    if extra.shape[1] == 1:
        return distance_loss(extra[:, 0], regression, target)
    return flow_loss(extra, regression, target)
