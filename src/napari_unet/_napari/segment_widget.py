"""The Segment dock widget: its fields become one :func:`segment_layer` call in a worker.

It offers only what the chosen model can do (outputs, 2D/3D, channels) and checks every option
before any compute. The result lands as a Labels layer named after the image and the model,
placed over the image; running again updates that layer. *Instances* keep their probabilities,
so the thresholds re-label them live (:mod:`napari_unet._napari.live_labels`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSlider, SpinBox
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_info
from napari.viewer import Viewer

from napari_unet._napari.job_widget import PLUGIN_NAME, JobWidget, running_job
from napari_unet._napari.layer_data import (
    CLASS_COLORS,
    RESULT_SUFFIXES,
    LayerDataTuple,
    is_background,
    segment_layer,
    semantic_class_names,
)
from napari_unet._napari.live_labels import (
    KeptProbabilities,
    class_counts,
    segment_instances,
    without_leading_axis,
)
from napari_unet._napari.model_choices import (
    default_model,
    model_label,
    models_changed,
    saved_models,
    suggested_model,
)
from napari_unet._napari.placement import axes_from_labels, layer_axes
from napari_unet.core.bioimageio import is_bioimageio_source
from napari_unet.core.models.registry import (
    ModelDescription,
    describe_models,
    read_description,
    resolve_model_path,
)
from napari_unet.core.predict.postprocess import instance_source, object_labeller

LOAD_FROM_FILE = "load from file..."
PLACEMENT = ("scale", "translate", "affine", "axis_labels", "units")
DISPLAY = ("opacity", "visible", "blending")
"""Display settings a result layer keeps when a new run has to replace it."""
LAYER_TYPES = {"image": Image, "labels": Labels}
LIVE_PIXELS = 1_000_000
"""Re-label at once up to this many pixels (about 0.1-0.5 s on 2 busy cores), else in a thread."""
JOINED, PLANES = "3D", "2D"
"""Stack modes: the axis before Y is Z (2D models: slices, objects joined in 3D), or each
plane on its own. The first is the default of the CLI and the API on Z stacks too."""


def model_outputs(description: ModelDescription) -> tuple[str, ...]:
    """List the outputs a model can give: instances need boundary or membrane classes."""
    if instance_source(description) is not None:
        return ("instances", "semantic", "probabilities")
    return ("semantic", "probabilities")


class SegmentWidget(JobWidget):
    """Segment the chosen image layer with a U-Net into a Labels layer over it."""

    job_name = "segmentation"

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(napari_viewer)
        self._loaded: list[str] = []
        self._model_before = ""
        self._kept: KeptProbabilities | None = None
        self._foreground_key = "foreground_threshold"
        self._relabelling = False
        self.image = ComboBox(
            label="image", choices=self.layer_choices(Image), tooltip="the Image layer to segment"
        )
        self.model = ComboBox(
            label="model",
            choices=self._model_choices,
            tooltip="built-in models, models you trained, or a model folder",
        )
        self.mode = ComboBox(
            label="stack",
            choices=self._mode_choices,
            tooltip="on stacks: the axis before Y is Z and objects keep one label across "
            "slices (the default, as in the CLI and the API), or each plane on its own",
        )
        self.channel = ComboBox(
            label="channel",
            choices=self._channel_choices,
            tooltip="RGB layers: all channels (their mean for a one-channel model) or one",
        )
        self.level = SpinBox(
            label="resolution level", min=0, tooltip="multiscale layers: 0 is full resolution"
        )
        self.output = ComboBox(
            label="output",
            choices=self._output_choices,
            tooltip="what the model can give: one label per object, one label per class, "
            "or one probability layer per class",
        )
        self.foreground = _threshold_slider(
            "foreground",
            "instances: pixels whose object probability is above this belong to an object; "
            "lower finds larger objects",
        )
        self.seed = _threshold_slider(
            "seed",
            "instances: objects start where the interior probability (distance models: the "
            "distance to the outline, 1 at centres) is above this; higher splits touching "
            "objects more often but may miss faint ones",
        )
        self.min_size = SpinBox(
            label="min size (px)",
            min=0,
            max=100_000,
            tooltip="instances: smaller objects are dropped (re-labels at once, no new run)",
        )
        self.diameter = SpinBox(
            label="object diameter (px)",
            min=0,
            max=10_000,
            tooltip="typical object diameter in pixels: the image is rescaled to the size the "
            "model was trained at, and the labels back; 0 uses the image as it is",
        )
        self.device = ComboBox(
            label="device", choices=_device_choices(), tooltip="where the network runs"
        )
        self.current_slice = CheckBox(
            text="current slice only (preview)",
            tooltip="segment only the plane (or volume) on screen: a quick look at big stacks",
        )
        self.advanced = CheckBox(text="advanced", tooltip="show the tiling options")
        self.tile_size = SpinBox(
            label="tile size (0 = auto)",
            min=0,
            max=4096,
            step=16,
            tooltip="largest network input per axis; 0 takes what the memory allows",
        )
        self.overlap = SpinBox(
            label="overlap (0 = auto)",
            min=0,
            max=1024,
            tooltip="pixels neighbouring tiles share; 0 follows the network's receptive field",
        )
        self.add_fields(
            [
                self.image,
                self.model,
                self.mode,
                self.channel,
                self.level,
                self.output,
                self.foreground,
                self.seed,
                self.min_size,
                self.diameter,
                self.device,
                self.current_slice,
                self.advanced,
                self.tile_size,
                self.overlap,
            ],
        )
        self.image.changed.connect(self._follow_image)
        self.model.changed.connect(self._follow_model)
        self.output.changed.connect(self._show_thresholds)
        self.advanced.changed.connect(self._show_advanced)
        for threshold in (self.foreground, self.seed, self.min_size):
            threshold.changed.connect(self._relabel)
        self.follow(models_changed, self.model.reset_choices)
        self.reset_choices()
        if default_model() in self.model.choices:
            self.model.value = default_model()
        self._show_advanced(False)
        self._follow_image(self.image.value)
        if self.model.value != LOAD_FROM_FILE:  # no model at all: ask only when the user picks it
            self._follow_model(self.model.value)

    # -- what the chosen model and image allow -----------------------------------------------

    def description(self) -> ModelDescription | None:
        """Return the chosen model's card, or ``None`` while no model is chosen."""
        model = self.model.value
        if model in (None, LOAD_FROM_FILE):
            return None
        if is_bioimageio_source(model):  # a package's card comes from loading it
            return _package_description(model)
        return dict(describe_models()).get(model) or read_description(resolve_model_path(model))

    def _model_choices(self, _: Any) -> list[tuple[str, str]]:
        loaded = [(f"{Path(path).name} ({path})", path) for path in self._loaded]
        return [*saved_models(), *loaded, (LOAD_FROM_FILE, LOAD_FROM_FILE)]

    def _mode_choices(self, _: Any) -> list[tuple[str, str]]:
        description = self._safe_description()
        if description is not None and description.spatial_dims == 3:
            return [("3D volumes", JOINED)]
        return [("slices, objects joined in 3D", JOINED), ("each slice on its own", PLANES)]

    def _channel_choices(self, _: Any) -> list[tuple[str, int | None]]:
        layer, description = self.image.value, self._safe_description()
        if layer is None or not layer.rgb:
            return [("all", None)]
        expected = description.in_channels if description is not None else 1
        if expected != 1:
            return [("all", None)]
        names = ("red", "green", "blue", "alpha")
        return [("all (mean)", None), *((names[c], c) for c in range(_channel_count(layer)))]

    def _output_choices(self, _: Any) -> list[str]:
        description = self._safe_description()
        return list(model_outputs(description) if description else ("semantic", "probabilities"))

    def _safe_description(self) -> ModelDescription | None:
        try:
            return self.description()
        except (OSError, ValueError):
            return None

    def _follow_image(self, layer: Image | None) -> None:
        suggested = suggested_model(layer, self.model.value) if layer is not None else None
        if suggested in self.model.choices:  # e.g. the EM sample picks em-membranes
            self.model.value = suggested
        _refill(self.channel)
        self.channel.visible = layer is not None and layer.rgb
        self.level.visible = layer is not None and layer.multiscale
        if layer is not None and layer.multiscale:
            self.level.max = len(layer.data) - 1
        self._default_mode()

    def _follow_model(self, model: str | None) -> None:
        if model == LOAD_FROM_FILE:
            self._load_from_file()
            return
        try:
            description = self.description()
        except (OSError, ValueError) as error:
            self.status.value = f"cannot use this model: {error}"
            return
        if description is None:
            return
        self._model_before = model
        self._kept = None  # the new model's thresholds must not re-label the old result
        for field in (self.mode, self.channel, self.output):
            _refill(field)
        self.output.value = description.output_kind
        _, thresholds = object_labeller(description)
        self._foreground_key = next(iter(thresholds))  # foreground_ or interior_threshold
        with self.foreground.changed.blocked(), self.seed.changed.blocked():
            self.foreground.value = thresholds[self._foreground_key]
            self.seed.value = thresholds["seed_threshold"]
        with self.min_size.changed.blocked():
            self.min_size.value = thresholds["min_size"]
        self._default_mode()
        self._show_thresholds(self.output.value)
        self.diameter.visible = bool(description.object_diameter_px)
        if description.object_diameter_px:
            self.diameter.tooltip = (
                f"typical object diameter in pixels; {description.name} was trained on objects "
                f"of {description.object_diameter_px:g} px: the image is rescaled by their "
                "ratio and the labels come back on its grid; 0 uses the image as it is"
            )

    def _default_mode(self) -> None:
        """On stacks, follow the layer's axes as the CLI follows a file's: Z joins, T does not."""
        layer = self.image.value
        stack = layer is not None and layer.ndim >= 3
        self.mode.visible = stack
        _refill(self.mode)
        if stack and len(self.mode.choices) > 1:
            try:
                has_z = "Z" in axes_from_labels(layer.axis_labels, layer.ndim)
            except ValueError:  # too many axes: Run says so
                has_z = True
            self.mode.value = JOINED if has_z else PLANES

    def _load_from_file(self) -> None:
        """Ask for a model folder; on Cancel, the model chosen before stays."""
        folder = ask_model_folder()
        if folder:
            self._loaded.append(folder)
        self.model.reset_choices()
        self.model.value = folder or self._model_before or self.model.choices[0]

    def _show_advanced(self, shown: bool) -> None:
        self.tile_size.visible = self.overlap.visible = shown

    def _show_thresholds(self, output: str | None) -> None:
        for field in (self.foreground, self.seed, self.min_size):
            field.visible = output == "instances"

    def thresholds(self) -> dict[str, Any]:
        """Return the post-processing thresholds as :func:`instance_labels` takes them."""
        return {
            self._foreground_key: round(float(self.foreground.value), 3),
            "seed_threshold": round(float(self.seed.value), 3),
            "min_size": int(self.min_size.value),
        }

    # -- checks, then one worker -------------------------------------------------------------

    def check_options(self) -> ModelDescription:
        """Raise ``ValueError`` naming the first option the model or image cannot honour."""
        layer = self.image.value
        if layer is None:
            raise ValueError("add or open an image layer to segment first")
        try:
            description = self.description()
        except (OSError, ValueError) as error:
            raise ValueError(f"model {self.model.value!r} cannot be used: {error}") from error
        if description is None:
            raise ValueError("choose a model")
        name = description.name
        axes = layer_axes(layer, self.mode.value if layer.ndim >= 3 else None)
        if description.spatial_dims == 3 and layer.ndim < 3:
            raise ValueError(f"model {name!r} is 3D: it needs a stack, and {layer.name!r} is 2D")
        if self.output.value not in model_outputs(description):
            raise ValueError(
                f"model {name!r} gives {description.output_kind} "
                f"({', '.join(description.class_names)}), not {self.output.value}; "
                f"choose {' or '.join(model_outputs(description))}"
            )
        if "C" in axes:
            have = 1 if self.channel.value is not None else _channel_count(layer)
            if have not in (1, description.in_channels) and description.in_channels != 1:
                raise ValueError(
                    f"model {name!r} expects {description.in_channels} channels; "
                    f"{layer.name!r} has {have}"
                )
        if self.diameter.value and not description.object_diameter_px:
            raise ValueError(f"model {name!r} does not state its training object size; set 0")
        if layer.multiscale and not 0 <= self.level.value < len(layer.data):
            raise ValueError(f"{layer.name!r} has levels 0 to {len(layer.data) - 1}")
        return description

    def start(self) -> None:
        """Check every option, then segment the chosen layer with the chosen model in a worker."""
        try:
            description = self.check_options()
        except ValueError as error:
            self.refuse(f"cannot run: {error}")
            return
        layer, model = self.image.value, self.model.value
        self._kept = None  # a re-labelling still running must not overwrite the new result
        message = f"segmenting {layer.name} with {model_label(model)}..."
        options = self.segment_options()
        if options["output"] == "instances":
            del options["output"]
            self.launch(
                segment_instances,
                layer,
                model,
                label=model_label(model),
                thresholds=self.thresholds(),
                **options,
                done=self._show_instances,
                message=message,
            )
        else:
            self.launch(
                segment_layer,
                layer,
                model,
                **options,
                done=lambda result: self._show_classes(result, description),
                message=message,
            )

    def segment_options(self) -> dict[str, Any]:
        """Translate the fields into :func:`segment_layer` keyword arguments.

        A preview with a 2D model segments the plane on screen, so it takes each plane on its own.
        """
        layer, description = self.image.value, self._safe_description()
        mode = self.mode.value if layer.ndim >= 3 else None
        if mode and self.current_slice.value and description and description.spatial_dims == 2:
            mode = PLANES
        sized = description is not None and bool(description.object_diameter_px)
        return {
            "output": self.output.value,
            "mode": mode,
            "channel": self.channel.value if layer.rgb else None,
            "level": self.level.value if layer.multiscale else 0,
            "position": self._viewer.dims.point if self.current_slice.value else None,
            "device": self.device.value,
            "tile_shape": self.tile_size.value or None,
            "overlap": self.overlap.value or None,
            "diameter": (self.diameter.value or None) if sized else None,
        }

    # -- results -----------------------------------------------------------------------------

    def _show_instances(self, result: tuple[LayerDataTuple, KeptProbabilities | None, int]) -> None:
        layer_data, self._kept, count = result
        self._show_layer(layer_data)
        took = f"{self.elapsed_s:.1f} s"
        self.status.value = f"{layer_data[1]['name']}: {count} objects in {took}"
        self.status.tooltip = (
            "move the thresholds to re-label at once"
            if self._kept is not None
            else "too large to keep its probabilities, or rescaled to an object diameter: "
            "new thresholds apply at the next Run"
        )

    def _show_classes(self, layer_data: LayerDataTuple, description: ModelDescription) -> None:
        """Show semantic labels, or one probability layer per class, named after the class."""
        data, meta, kind = layer_data
        classes = semantic_class_names(description)
        if kind == "labels":
            self._show_layer(layer_data)
            counts = class_counts(data, len(classes))
            present = [name for name, n in zip(classes, counts, strict=True) if n]
            shown = f"classes found: {', '.join(present)}"
        else:
            base = meta["name"].removesuffix(RESULT_SUFFIXES["probabilities"])
            plane_meta = without_leading_axis(meta)
            for index, output in enumerate(description.class_names):
                self._show_layer(
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
                )
            shown = f"one probability layer per class ({', '.join(classes)})"
            if len(description.class_names) > len(classes):
                shown += " and the distance to the outline"
        self.status.value = f"{meta['name']}: {shown}, in {self.elapsed_s:.1f} s"

    def _show_layer(self, layer_data: LayerDataTuple) -> None:
        """Update the layer of an earlier run in place, keeping the user's display settings.

        napari cannot turn a layer multiscale (or back) or change its dimensions, so a result
        that differs so replaces the earlier layer at its place in the list.
        """
        data, meta, kind = layer_data
        name = meta["name"]
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if existing is not None and _fits(existing, data, meta, kind):
            existing.data = data
            for key in PLACEMENT:
                setattr(existing, key, meta[key])
            return
        layer = Layer.create(data, meta, kind)
        if existing is None:
            self._viewer.add_layer(layer)
            return
        for key in DISPLAY:
            setattr(layer, key, getattr(existing, key))
        index = self._viewer.layers.index(existing)
        self._viewer.layers.remove(existing)
        self._viewer.layers.insert(index, layer)

    def _relabel(self, *_: Any) -> None:
        """Re-label the last instances from their kept probabilities with the new thresholds.

        Up to :data:`LIVE_PIXELS` this takes well under a second and runs at once; larger
        images re-label in a thread (the watershed grows faster than the pixel count), and
        when thresholds moved meanwhile, once more with the latest ones.
        """
        kept = self._kept
        if kept is None or self.running or kept.layer_name not in self._viewer.layers:
            return
        if kept.probabilities[0].size <= LIVE_PIXELS:
            self._show_relabelled(kept, time.perf_counter(), *kept.labels(self.thresholds()))
        elif not self._relabelling:
            self._relabelling = True
            self.status.value = f"{kept.layer_name}: re-labelling with the new thresholds..."
            thresholds, started = self.thresholds(), time.perf_counter()
            worker = create_worker(kept.labels, thresholds)
            worker.returned.connect(
                lambda result: self._relabelled(kept, thresholds, started, result)
            )
            worker.start()

    def _relabelled(
        self,
        kept: KeptProbabilities,
        thresholds: dict[str, Any],
        started: float,
        result: tuple[np.ndarray, int],
    ) -> None:
        self._relabelling = False
        if self._gone or kept is not self._kept:  # closed, or a new run replaced the result
            return
        self._show_relabelled(kept, started, *result)
        if thresholds != self.thresholds():
            self._relabel()

    def _show_relabelled(
        self, kept: KeptProbabilities, started: float, labels: np.ndarray, count: int
    ) -> None:
        if kept.layer_name not in self._viewer.layers:
            return
        self._viewer.layers[kept.layer_name].data = labels
        took = 1000 * (time.perf_counter() - started)
        self.status.value = f"{kept.layer_name}: {count} objects (re-labelled in {took:.0f} ms)"


def _threshold_slider(label: str, tooltip: str) -> FloatSlider:
    """Make a probability threshold that applies on release (each change re-labels)."""
    return FloatSlider(
        label=label,
        min=0.05,
        max=0.95,
        step=0.05,
        tracking=False,
        tooltip=f"{tooltip} (re-labels at once, no new run)",
    )


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


def _refill(field: ComboBox) -> None:
    """Replace a picker's choices in their own order (magicgui keeps old ones first)."""
    with field.changed.blocked():
        field.native.clear()
        field.reset_choices()


def _channel_count(layer: Image) -> int:
    """Channels of an RGB(A) layer (the last axis of its data, or of its first level)."""
    return (layer.data[0] if layer.multiscale else layer.data).shape[-1]


def _device_choices() -> list[tuple[str, str]]:
    """List the devices torch can use here, ``auto`` labelled with what it resolves to."""
    from napari_unet.core.device import available_devices, resolve_device

    return [(f"auto ({resolve_device('auto')})", "auto"), *((d, d) for d in available_devices())]


def ask_model_folder() -> str:
    """Ask for a model: a folder's ``model.json`` or a bioimage.io package; ``""`` if cancelled.

    A ``model.json`` stands for its folder.
    """
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(
        caption="Choose a model: model.json in a napari-unet model folder, or a bioimage.io "
        "package (.zip, rdf.yaml)",
        filter="Models (model.json *.zip rdf.yaml bioimageio.yaml);;All files (*)",
    )
    return str(Path(path).parent) if Path(path).name == "model.json" else path


@functools.lru_cache(maxsize=8)
def _package_description(source: str) -> ModelDescription:
    from napari_unet.core.models.registry import load_model

    return load_model(source).description


def open_and_segment(viewer: Viewer) -> None:
    """Open an image file and segment it at once with the Segment widget's model and options.

    A menu command rather than a second reader: npe2 tries one plugin's readers for the same
    pattern in no fixed order, so a second ``*.tif`` reader would sometimes win a plain open.
    While a job runs in the viewer it opens nothing and says so.
    """
    busy = running_job(viewer)
    if busy is not None:
        show_info(f"{PLUGIN_NAME}: a {busy.job_name} is running; wait, or cancel it first")
        return
    path = ask_image_file()
    if not path:
        return
    images = [layer for layer in viewer.open(path, plugin=PLUGIN_NAME) if isinstance(layer, Image)]
    if not images:
        show_info(f"{PLUGIN_NAME}: {Path(path).name} holds labels, not an image to segment")
        return
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, "Segment")
    widget.image.value = images[0]
    widget.start()


def ask_image_file() -> str:
    """Ask for an image file to open; ``""`` if cancelled."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(
        caption="Open and segment", filter="Images (*.tif *.tiff *.ome.tif)"
    )
    return path
