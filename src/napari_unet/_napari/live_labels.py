"""Instances that follow the post-processing thresholds live, without running the network again.

A run for *instances* keeps the class probabilities the engine returns with
``output="probabilities"``; moving a threshold then only re-runs the engine's post-processing
(:mod:`napari_unet.core.predict.postprocess`: seeded watershed, or cells between membranes) on them,
as cellpose-napari and stardist-napari users expect. Probabilities cost 4 bytes a pixel per
class, so above :data:`KEEP_LIMIT_BYTES`, and with a ``diameter`` (whose labels are made at
the model's scale, as the API and the CLI make them), the engine makes the labels itself with
the thresholds set at Run time, and a change of threshold applies at the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet._napari.layer_data import LayerDataTuple, result_name, segment_layer
from napari_unet._napari.placement import layer_axes
from napari_unet.core.predict.postprocess import instance_labels, object_labeller
from napari_unet.core.provenance import KEY as PROVENANCE_KEY

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_unet.core.models.registry import Model
    from napari_unet.core.predict.options import PredictOptions

Labeller = Callable[..., np.ndarray]
"""The engine's post-processing: probabilities and thresholds in, object labels out."""

KEEP_LIMIT_BYTES = 1 << 30
"""Keep probabilities for live thresholds up to this size (1 GiB: a 9000x9000 image)."""

INDEPENDENT_AXES = "T"
"""Axes whose planes are labelled one by one; Z, Y and X are labelled together (3D objects)."""


@dataclass
class KeptProbabilities:
    """The probabilities behind one Labels layer, and how to label them again."""

    probabilities: np.ndarray
    axes: str
    layer_name: str
    label: Labeller

    def labels(self, thresholds: dict[str, Any]) -> tuple[np.ndarray, int]:
        """Label the kept probabilities with ``thresholds``; return labels and object count."""
        return planewise_instances(self.probabilities, self.axes, thresholds, self.label)


def planewise_instances(
    probabilities: np.ndarray,
    axes: str,
    thresholds: dict[str, Any],
    label: Labeller = instance_labels,
) -> tuple[np.ndarray, int]:
    """Instances from ``(3, *axes)`` probabilities, each T plane on its own as the engine does.

    Returns the labels (numbered from 1 in every plane) and the number of objects in all planes.
    """
    independent = [i for i, letter in enumerate(axes) if letter in INDEPENDENT_AXES]
    moved = np.moveaxis(probabilities, [1 + i for i in independent], range(1, 1 + len(independent)))
    lead = moved.shape[1 : 1 + len(independent)]
    planes = moved.reshape(moved.shape[0], -1, *moved.shape[1 + len(independent) :])
    labelled = [label(planes[:, n], **thresholds) for n in range(planes.shape[1])]
    count = sum(int(plane.max(initial=0)) for plane in labelled)
    stacked = np.stack(labelled).reshape(*lead, *labelled[0].shape)
    return np.moveaxis(stacked, range(len(independent)), independent), count


def without_leading_axis(meta: dict[str, Any]) -> dict[str, Any]:
    """Place one class plane of a result with a leading class axis: its placement keywords."""
    placed = {key: tuple(meta[key][1:]) for key in ("scale", "translate", "axis_labels", "units")}
    return {**placed, "affine": np.asarray(meta["affine"])[1:, 1:], "metadata": meta["metadata"]}


def segment_instances(
    layer: Image,
    model: str | Path | Model,
    *,
    options: PredictOptions,
    thresholds: dict[str, Any],
    label: str,
    mode: str | None = None,
    position: Any = None,
    level: int = 0,
    **run: Any,
) -> tuple[LayerDataTuple, KeptProbabilities | None, int]:
    """Segment into instances with ``thresholds``, keeping the probabilities when they are small.

    ``label`` names the model in the layer name (``"<image> (<label>)"``); ``options`` and
    the other keywords go to :func:`segment_layer`. Returns the Labels layer data (its
    provenance with the thresholds), the kept probabilities (or ``None``) and the object count.
    """
    from napari_unet.core.models.registry import load_model

    model = with_thresholds(load_model(model), thresholds)
    name = result_name(layer.name, label, "instances")
    axes = layer_axes(layer, mode).replace("C", "")
    common = {"options": options, "mode": mode, "position": position, "level": level, **run}
    channels = model.description.architecture.out_channels
    too_big = _probability_bytes(layer, axes, level, position, channels) > KEEP_LIMIT_BYTES
    # Rescaled images are labelled at the model's scale, as the API does; multiscale layers
    # go to a lazy zarr pyramid, never held whole.
    if too_big or options.diameter or (layer.multiscale and position is None):
        labels, meta, kind = segment_layer(layer, model, output="instances", **common)
        meta = {**meta, "name": name, "metadata": _instances_record(meta, thresholds)}
        return (labels, meta, kind), None, label_count(labels)
    probabilities, meta, _ = segment_layer(layer, model, output="probabilities", **common)
    kept = KeptProbabilities(probabilities, axes, name, object_labeller(model.description)[0])
    labels, count = kept.labels(thresholds)
    meta = {**without_leading_axis(meta), "name": name}
    meta["metadata"] = _instances_record(meta, thresholds)
    return (labels, meta, "labels"), kept, count


def _instances_record(meta: dict[str, Any], thresholds: dict[str, Any]) -> dict[str, Any]:
    """Layer metadata whose provenance says *instances*, with the thresholds that made them."""
    record = meta["metadata"][PROVENANCE_KEY]
    options = {**record["options"], "output": "instances"}
    return with_provenance_thresholds({PROVENANCE_KEY: {**record, "options": options}}, thresholds)


def with_provenance_thresholds(
    metadata: dict[str, Any], thresholds: dict[str, Any]
) -> dict[str, Any]:
    """Return layer ``metadata`` whose provenance record names the post-processing thresholds.

    Instances depend on them as much as on the options, and the dock's may differ from the
    model card's.
    """
    record = metadata.get(PROVENANCE_KEY)
    if record is None:
        return metadata
    return {**metadata, PROVENANCE_KEY: {**record, "thresholds": dict(thresholds)}}


def label_count(labels: Any) -> int:
    """Count objects (labels are 1..N), reading lazy levels one chunk at a time."""
    return max(
        (int(np.max(block, initial=0)) for block in _full_resolution_blocks(labels)), default=0
    )


def class_counts(labels: Any, classes: int) -> np.ndarray:
    """Count the pixels of each class, reading lazy levels one chunk at a time."""
    counts = np.zeros(classes, np.int64)
    for block in _full_resolution_blocks(labels):
        counts += np.bincount(block.ravel(), minlength=classes)[:classes]
    return counts


def _full_resolution_blocks(labels: Any) -> Iterator[np.ndarray]:
    """Yield the chunks of a label image (or of the first level of a pyramid) as arrays."""
    from napari_unet.core.io.omezarr import blocks

    level = labels[0] if isinstance(labels, list) else labels
    chunks = getattr(level, "chunks", None) or level.shape
    for block in blocks(level.shape, chunks):
        yield np.asarray(level[block])


def with_thresholds(model: Model, thresholds: dict[str, Any]) -> Model:
    """Return the same network with other post-processing thresholds on its card."""
    from napari_unet.core.models.registry import Model

    return Model(replace(model.description, postprocess=dict(thresholds)), model.network)


def _probability_bytes(layer: Image, axes: str, level: int, position: Any, channels: int) -> int:
    data = layer.data[level] if layer.multiscale else layer.data
    shape = [int(n) for n in data.shape[: len(axes)]]
    if position is not None:
        shape = [
            1 if letter in INDEPENDENT_AXES else n for letter, n in zip(axes, shape, strict=True)
        ]
    return channels * 4 * int(np.prod(shape))
