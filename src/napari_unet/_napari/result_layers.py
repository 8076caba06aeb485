"""How the Segment dock's results land in the viewer, and how instances follow the thresholds.

A result keeps one layer per image, model and output: running again updates it in place (or
replaces it at its place when napari cannot take the new data), and moving a threshold
re-labels the kept probabilities without running the network (:mod:`.live_labels`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker

from napari_unet._napari.layer_data import (
    CLASS_COLORS,
    RESULT_SUFFIXES,
    LayerDataTuple,
    is_background,
    semantic_class_names,
)
from napari_unet._napari.live_labels import (
    KeptProbabilities,
    class_counts,
    with_provenance_thresholds,
    without_leading_axis,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from napari.viewer import Viewer

    from napari_unet._napari.job_widget import JobWidget
    from napari_unet.core.models.registry import ModelDescription

UPDATED = ("scale", "translate", "affine", "axis_labels", "units", "metadata")
"""What a new run sets on the layer of an earlier one: its placement and its provenance."""
DISPLAY = ("opacity", "visible", "blending")
"""Display settings a result layer keeps when a new run has to replace it."""
LAYER_TYPES = {"image": Image, "labels": Labels}
LIVE_PIXELS = 1_000_000
"""Re-label at once up to this many pixels (about 0.1-0.5 s on 2 busy cores), else in a thread."""


def show_layer(viewer: Viewer, layer_data: LayerDataTuple) -> None:
    """Update the layer of an earlier run in place, keeping the user's display settings.

    napari cannot turn a layer multiscale (or back) or change its dimensions, so a result
    that differs so replaces the earlier layer at its place in the list.
    """
    data, meta, kind = layer_data
    name = meta["name"]
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and _fits(existing, data, meta, kind):
        existing.data = data
        for key in UPDATED:
            setattr(existing, key, meta[key])
        return
    layer = Layer.create(data, meta, kind)
    if existing is None:
        viewer.add_layer(layer)
        return
    for key in DISPLAY:
        setattr(layer, key, getattr(existing, key))
    index = viewer.layers.index(existing)
    viewer.layers.remove(existing)
    viewer.layers.insert(index, layer)


def class_layers(
    layer_data: LayerDataTuple, description: ModelDescription
) -> tuple[list[LayerDataTuple], str]:
    """Split a semantic or probability result into its layers; say what they show.

    Semantic labels stay one layer; probabilities become one Image layer per class, named
    after the class (a distance model's last output is the distance to the outline).
    """
    data, meta, kind = layer_data
    classes = semantic_class_names(description)
    if kind == "labels":
        counts = class_counts(data, len(classes))
        present = [name for name, n in zip(classes, counts, strict=True) if n]
        return [layer_data], f"classes found: {', '.join(present)}"
    base = meta["name"].removesuffix(RESULT_SUFFIXES["probabilities"])
    plane_meta = without_leading_axis(meta)
    layers = [
        (
            data[index],
            {
                **plane_meta,
                "name": _output_layer_name(base, output, index < len(classes)),
                "colormap": CLASS_COLORS[index % len(CLASS_COLORS)],
                "contrast_limits": (0.0, 1.0),
                "blending": "additive",
                "visible": not is_background(output),
            },
            kind,
        )
        for index, output in enumerate(description.class_names)
    ]
    shown = f"one probability layer per class ({', '.join(classes)})"
    if len(description.class_names) > len(classes):
        shown += " and the distance to the outline"
    return layers, shown


def _fits(layer: Layer, data: Any, meta: dict[str, Any], kind: str) -> bool:
    """Whether new data can go into an existing layer: same kind, multiscale or not, and ndim."""
    multiscale = bool(meta.get("multiscale"))
    ndim = (data[0] if multiscale else data).ndim
    return (
        isinstance(layer, LAYER_TYPES[kind])
        and layer.multiscale == multiscale
        and layer.ndim == ndim
    )


def _output_layer_name(base: str, output: str, is_class: bool) -> str:
    """Name one output channel's layer: a class probability, or a distance model's distance."""
    return f"{base} {output} probability" if is_class else f"{base} distance to outline"


class LiveRelabel:
    """Re-label the dock's last instances from their kept probabilities with new thresholds.

    Up to :data:`LIVE_PIXELS` this takes well under a second and runs at once; larger images
    re-label in a thread (the watershed grows faster than the pixel count), and when
    thresholds moved meanwhile, once more with the latest ones. The layer's provenance
    follows the thresholds.
    """

    def __init__(self, dock: JobWidget, thresholds: Callable[[], dict[str, Any]]) -> None:
        self._dock = dock
        self._thresholds = thresholds
        self.kept: KeptProbabilities | None = None
        """The probabilities of the last instances, ``None`` when there are none to re-label."""
        self.busy = False
        """Whether a re-labelling runs in a thread."""

    def __call__(self, *_: Any) -> None:
        """Re-label with the thresholds the dock shows now."""
        kept, viewer = self.kept, self._dock.viewer
        if kept is None or self._dock.running or kept.layer_name not in viewer.layers:
            return
        if kept.probabilities[0].size <= LIVE_PIXELS:
            thresholds = self._thresholds()
            self._show(kept, thresholds, time.perf_counter(), *kept.labels(thresholds))
        elif not self.busy:
            self.busy = True
            self._dock.status.value = f"{kept.layer_name}: re-labelling with the new thresholds..."
            thresholds, started = self._thresholds(), time.perf_counter()
            worker = create_worker(kept.labels, thresholds)
            worker.returned.connect(lambda result: self._done(kept, thresholds, started, result))
            worker.start()

    def _done(
        self,
        kept: KeptProbabilities,
        thresholds: dict[str, Any],
        started: float,
        result: tuple[np.ndarray, int],
    ) -> None:
        self.busy = False
        if self._dock.closed or kept is not self.kept:  # closed, or a new run replaced it
            return
        self._show(kept, thresholds, started, *result)
        if thresholds != self._thresholds():
            self()

    def _show(
        self,
        kept: KeptProbabilities,
        thresholds: dict[str, Any],
        started: float,
        labels: np.ndarray,
        count: int,
    ) -> None:
        viewer = self._dock.viewer
        if kept.layer_name not in viewer.layers:
            return
        layer = viewer.layers[kept.layer_name]
        layer.data = labels
        layer.metadata = with_provenance_thresholds(layer.metadata, thresholds)
        took = 1000 * (time.perf_counter() - started)
        self._dock.status.value = (
            f"{kept.layer_name}: {count} objects (re-labelled in {took:.0f} ms)"
        )
