"""Turn class probabilities into semantic labels or object instances."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet.core.models.model_types import (
    DISTANCE_CHANNEL,
    FLOW_CHANNELS,
    FLOW_SCALE,
    INSTANCE_CLASSES,
)
from napari_unet.core.predict.flows import group_by_sink

INSTANCE_DEFAULTS: dict[str, Any] = {
    "foreground_threshold": 0.5,
    "seed_threshold": 0.5,
    "min_size": 16,
}
FLOW_DEFAULTS: dict[str, Any] = {
    "foreground_threshold": 0.5,
    "min_size": 16,
    "flow_steps": 50,
}
CELL_DEFAULTS: dict[str, Any] = {
    "interior_threshold": 0.5,
    "seed_threshold": 0.8,
    "min_size": 16,
}


def semantic_labels(probabilities: np.ndarray) -> np.ndarray:
    """Class index per pixel (0 = first class) from ``(C, *spatial)`` probabilities or logits.

    Two classes need one comparison, not an argmax over a channel axis, which is slow on CPU.
    """
    if probabilities.shape[0] == 2:
        return (probabilities[1] > probabilities[0]).astype(np.uint8)
    labels = np.argmax(probabilities, axis=0)
    return labels.astype(np.uint8 if probabilities.shape[0] <= 256 else np.uint16)


def instance_labels(
    probabilities: np.ndarray,
    foreground_threshold: float = INSTANCE_DEFAULTS["foreground_threshold"],
    seed_threshold: float = INSTANCE_DEFAULTS["seed_threshold"],
    min_size: int = INSTANCE_DEFAULTS["min_size"],
) -> np.ndarray:
    """One label per object from background/interior/boundary probabilities ``(3, *spatial)``.

    Seeds are connected regions of confident interior; a seeded watershed on the interior
    probability grows them over the foreground, which splits touching objects along their
    shared boundary. Works the same for 2D and 3D, so 3D objects keep one label across slices.

    Distance models add a fourth channel, the predicted :func:`~napari_unet.core.train.targets.
    center_distance`: seeds are then where it exceeds ``seed_threshold`` and the watershed
    runs on it, which separates touching objects that share a faint boundary.
    """
    if probabilities.shape[0] not in (3, 4):
        raise ValueError(
            f"instance post-processing needs 3 channels (background, interior, boundary), "
            f"or 4 with a distance, got {probabilities.shape[0]}"
        )
    foreground = probabilities[1] + probabilities[2] > foreground_threshold
    relief = probabilities[3] if probabilities.shape[0] == 4 else probabilities[1]
    return _grow_seeds(relief, foreground, seed_threshold, min_size)


def flow_instances(
    probabilities: np.ndarray,
    foreground_threshold: float = FLOW_DEFAULTS["foreground_threshold"],
    min_size: int = FLOW_DEFAULTS["min_size"],
    flow_steps: int = FLOW_DEFAULTS["flow_steps"],
) -> np.ndarray:
    """One label per object from the classes and flows ``(3 + dims, *spatial)`` of a flows model.

    Foreground is where interior plus boundary probability exceeds ``foreground_threshold``;
    its pixels follow the flows for ``flow_steps`` unit steps and are grouped by where they end
    (:mod:`napari_unet.core.predict.flows`). ``flow_steps`` should reach about an object's
    radius; a larger object still ends as one ring-shaped, connected sink, so it is not split.
    """
    dims = probabilities.ndim - 1
    if probabilities.shape[0] != 3 + dims:
        raise ValueError(
            f"flow post-processing needs 3 classes and {dims} flow channels, "
            f"got {probabilities.shape[0]} channels"
        )
    foreground = probabilities[1] + probabilities[2] > foreground_threshold
    labels = group_by_sink(probabilities[3:], foreground, int(flow_steps))
    return _relabel_removing_small(labels, min_size)


def cell_instances(
    probabilities: np.ndarray,
    membrane_class: int = 0,
    interior_threshold: float = CELL_DEFAULTS["interior_threshold"],
    seed_threshold: float = CELL_DEFAULTS["seed_threshold"],
    min_size: int = CELL_DEFAULTS["min_size"],
) -> np.ndarray:
    """One label per cell from ``(C, *spatial)`` probabilities of a membrane model (EM).

    Cells are the regions between membranes. Seeds are connected regions of confident
    interior, grown by a seeded watershed over the rest of the interior only, so a faint gap
    in a membrane does not merge two cells, and membranes stay 0: they show as the lines
    between cells. ``probabilities`` are softmax outputs; all classes but ``membrane_class``
    count as interior.
    """
    if not -probabilities.shape[0] <= membrane_class < probabilities.shape[0]:
        raise ValueError(
            f"membrane_class={membrane_class} is not one of the {probabilities.shape[0]} classes"
        )
    interior = 1.0 - probabilities[membrane_class]
    return _grow_seeds(interior, interior > interior_threshold, seed_threshold, min_size)


def _grow_seeds(
    interior: np.ndarray, foreground: np.ndarray, seed_threshold: float, min_size: int
) -> np.ndarray:
    """Seed on confident interior, grow the seeds over ``foreground``, drop small objects."""
    seeds, _ = ndi.label(interior > seed_threshold)
    if min_size > 1 and seeds.max() > 0:
        sizes = np.bincount(seeds.ravel())
        small = sizes < max(1, min_size // 4)
        small[0] = False
        seeds[small[seeds]] = 0
    labels = watershed(-interior, markers=seeds, mask=foreground)
    return _relabel_removing_small(labels, min_size)


def _relabel_removing_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects under ``min_size`` pixels and number the rest 1..N in the smallest dtype."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lookup = np.zeros(sizes.size, dtype=np.int64)
    count = int(keep.sum())
    lookup[keep] = np.arange(1, count + 1)
    return lookup[labels].astype(np.min_scalar_type(count))


def activate(logits: np.ndarray, description: Any) -> np.ndarray:
    """Probabilities from a network's ``(C, *spatial)`` logits (a new array, float32).

    A softmax over the classes; a distance model's last channel is a regression squashed to
    0..1 by a sigmoid instead, so it does not take part in the softmax.
    """
    import torch

    tensor = torch.from_numpy(logits)
    source = instance_source(description)
    if source not in ("distance", "flows"):
        return tensor.softmax(dim=0).numpy()
    classes = class_channels(description)
    extra = tensor[classes:].sigmoid() if source == "distance" else tensor[classes:] / FLOW_SCALE
    return torch.cat([tensor[:classes].softmax(dim=0), extra]).numpy()


def class_channels(description: Any) -> int:
    """How many leading output channels are classes; a distance or flows model's last are not."""
    if instance_source(description) in ("distance", "flows"):
        return len(INSTANCE_CLASSES)
    return description.architecture.out_channels


def instance_source(description: Any) -> str | None:
    """Name how a model's outputs become objects (``None``: they cannot).

    ``"boundaries"``: three classes, background, interior and boundary (seeded watershed); a
    fourth ``distance`` channel makes a ``"distance"`` model, one flow channel per spatial
    axis a ``"flows"`` model; a model with a ``membrane`` class (EM) is ``"membranes"``: one
    object per region between membranes. ``None``: the outputs cannot make objects.
    """
    if list(description.class_names) == [*INSTANCE_CLASSES, DISTANCE_CHANNEL]:
        return "distance"
    flows = list(FLOW_CHANNELS[-description.spatial_dims :])
    if list(description.class_names) == [*INSTANCE_CLASSES, *flows]:
        return "flows"
    if description.architecture.out_channels == 3 and description.output_kind == "instances":
        return "boundaries"
    if "membrane" in description.class_names:
        return "membranes"
    return "boundaries" if description.architecture.out_channels == 3 else None


def object_labeller(description: Any) -> tuple[Callable[..., np.ndarray], dict[str, Any]]:
    """Return how a model's outputs become objects, and its thresholds.

    Membrane models (EM) give one object per region between membranes
    (:func:`cell_instances`), flows models the pixels gathered by their flows
    (:func:`flow_instances`); the others a seeded watershed (:func:`instance_labels`). The
    thresholds are the card's, completed with that function's defaults. Prediction, the
    napari plugin's live re-labelling and evaluation all choose through here.
    """
    source = instance_source(description)
    if source == "membranes":
        membrane = description.class_names.index("membrane")
        label: Callable[..., np.ndarray] = partial(cell_instances, membrane_class=membrane)
        defaults = CELL_DEFAULTS
    elif source == "flows":
        label, defaults = flow_instances, FLOW_DEFAULTS
    else:
        label, defaults = instance_labels, INSTANCE_DEFAULTS
    return label, {key: description.postprocess.get(key, value) for key, value in defaults.items()}
