"""The Segment dock widget: its fields become one :func:`segment_layer` call in a worker.

It offers only what the chosen model can do (outputs, 2D/3D, channels), and makes one
``PredictOptions`` of its fields (:mod:`.prediction_fields`) that the engine checks, so a bad
value ends the run with the engine's message. The result lands as a Labels layer named after
the image and the model, placed over the image, with its provenance; running again updates
that layer. *Instances* keep their probabilities, so the thresholds re-label them live
(:mod:`.result_layers`, :mod:`.live_labels`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSlider, SpinBox
from napari.layers import Image
from napari.utils.notifications import show_info
from napari.viewer import Viewer

from napari_unet._napari.job_widget import PLUGIN_NAME, JobWidget, running_job
from napari_unet._napari.layer_data import LayerDataTuple, segment_layer
from napari_unet._napari.live_labels import KeptProbabilities, segment_instances
from napari_unet._napari.model_choices import (
    default_model,
    model_label,
    models_changed,
    saved_models,
    suggested_model,
)
from napari_unet._napari.placement import axes_from_labels, layer_axes
from napari_unet._napari.prediction_fields import (
    diameter_tooltip,
    prediction_fields,
    prediction_options,
)
from napari_unet._napari.result_layers import LiveRelabel, class_layers, show_layer
from napari_unet.core.bioimageio import is_bioimageio_source
from napari_unet.core.models.registry import (
    ModelDescription,
    describe_models,
    read_description,
    resolve_model_path,
)
from napari_unet.core.predict.options import PredictOptions
from napari_unet.core.predict.postprocess import instance_source, object_labeller

LOAD_FROM_FILE = "load from file..."
JOINED, PLANES = "3D", "2D"
"""Stack modes: the axis before Y is Z (2D models: slices, objects joined in 3D), or each
plane on its own. The first is the default of the CLI and the API on Z stacks too."""
PICKED = ("channel", "diameter", "device")
ADVANCED = ("precision", "tta", "tile_size", "overlap")
"""The engine's options the dock always shows (when they apply), and those under *advanced*."""


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
        self._foreground_key = "foreground_threshold"
        self.live = LiveRelabel(self, self.thresholds)
        """Re-labels the last instances when a threshold moves."""
        self._make_fields()
        self._follow_fields()
        if default_model() in self.model.choices:
            self.model.value = default_model()
        self._show_advanced(False)
        self._follow_image(self.image.value)
        if self.model.value != LOAD_FROM_FILE:  # no model at all: ask only when the user picks it
            self._follow_model(self.model.value)

    def _make_fields(self) -> None:
        """Make the fields: what to segment with which model, then the engine's options."""
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
        self.level = SpinBox(
            label="resolution level", min=0, tooltip="multiscale layers: 0 is full resolution"
        )
        self.output = ComboBox(
            label="output",
            choices=self._output_choices,
            tooltip="what the model can give: one label per object, one label per class, "
            "or one probability layer per class",
        )
        self.foreground, self.seed, self.min_size = _threshold_fields()
        self.current_slice = CheckBox(
            text="current slice only (preview)",
            tooltip="segment only the plane (or volume) on screen: a quick look at big stacks",
        )
        self.advanced = CheckBox(
            text="advanced", tooltip="show precision, symmetry averaging (tta) and tiling"
        )
        self.prediction = prediction_fields(self._channel_choices, _device_choices())
        """The fields of the engine's options, by name (also attributes of the dock)."""
        fields = self.prediction
        self.channel, self.diameter, self.device = (fields[n] for n in PICKED)
        self.precision, self.tta, self.tile_size, self.overlap = (fields[n] for n in ADVANCED)
        self.add_fields(
            [
                *(self.image, self.model, self.mode, self.channel, self.level, self.output),
                *(self.foreground, self.seed, self.min_size, self.diameter, self.device),
                *(self.current_slice, self.advanced, *(fields[n] for n in ADVANCED)),
            ]
        )

    def _follow_fields(self) -> None:
        """Connect the fields whose value changes what the others offer or show."""
        self.image.changed.connect(self._follow_image)
        self.model.changed.connect(self._follow_model)
        self.output.changed.connect(self._show_thresholds)
        self.advanced.changed.connect(self._show_advanced)
        for threshold in (self.foreground, self.seed, self.min_size):
            threshold.changed.connect(self.live)
        self.follow(models_changed, self.model.reset_choices)
        self.reset_choices()

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
        self.live.kept = None  # the new model's thresholds must not re-label the old result
        for field in (self.mode, self.channel, self.output):
            _refill(field)
        self.output.value = description.output_kind
        self._model_thresholds(description)
        self._default_mode()
        self._show_thresholds(self.output.value)
        self.diameter.visible = bool(description.object_diameter_px)
        if description.object_diameter_px:
            self.diameter.tooltip = diameter_tooltip(
                description.name, description.object_diameter_px
            )

    def _model_thresholds(self, description: ModelDescription) -> None:
        """Show the model card's thresholds, without re-labelling anything."""
        _, thresholds = object_labeller(description)
        self._foreground_key = next(iter(thresholds))  # foreground_ or interior_threshold
        with self.foreground.changed.blocked(), self.seed.changed.blocked():
            self.foreground.value = thresholds[self._foreground_key]
            self.seed.value = thresholds["seed_threshold"]
        with self.min_size.changed.blocked():
            self.min_size.value = thresholds["min_size"]

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
        for name in ADVANCED:
            self.prediction[name].visible = shown

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

    # -- one PredictOptions, one worker ------------------------------------------------------

    def start(self) -> None:
        """Segment the chosen layer with the chosen model and options in a worker.

        The options are checked by the engine when the dock makes them, the image and the
        model by the engine in the worker: either way its message ends the job.
        """
        try:
            description = self.chosen_model()
            where = self.layer_options()
            options = self.prediction_options()
        except ValueError as error:
            self.refuse(f"cannot run: {error}")
            return
        layer, model = self.image.value, self.model.value
        self.live.kept = None  # a re-labelling still running must not overwrite the new result
        message = f"segmenting {layer.name} with {model_label(model)}..."
        job = {"options": options, **where, "message": message}
        if options.output == "instances":
            done, labelled = self._show_instances, {"label": model_label(model)}
            labelled["thresholds"] = self.thresholds()
            self.launch(segment_instances, layer, model, done=done, **labelled, **job)
        else:
            done = functools.partial(self._show_classes, description=description)
            self.launch(segment_layer, layer, model, done=done, **job)

    def chosen_model(self) -> ModelDescription:
        """Return the chosen model's card; raise ``ValueError`` when there is none to run."""
        if self.image.value is None:
            raise ValueError("add or open an image layer to segment first")
        try:
            description = self.description()
        except (OSError, ValueError) as error:
            raise ValueError(f"model {self.model.value!r} cannot be used: {error}") from error
        if description is None:
            raise ValueError("choose a model")
        return description

    def layer_options(self) -> dict[str, Any]:
        """Say which part of the layer to segment, as :func:`segment_layer` takes it.

        A preview with a 2D model segments the plane on screen, so it takes each plane on its
        own. Raises ``ValueError`` for a layer whose axes the engine cannot be told.
        """
        layer, description = self.image.value, self._safe_description()
        mode = self.mode.value if layer.ndim >= 3 else None
        if mode and self.current_slice.value and description and description.spatial_dims == 2:
            mode = PLANES
        layer_axes(layer, mode)  # a layer of more axes than TZYX has no engine axes
        return {
            "mode": mode,
            "level": self.level.value if layer.multiscale else 0,
            "position": self.viewer.dims.point if self.current_slice.value else None,
        }

    def prediction_options(self) -> PredictOptions:
        """Return the one :class:`PredictOptions` of the fields, checked by the engine."""
        description = self._safe_description()
        return prediction_options(
            self.prediction,
            output=self.output.value,
            rgb=self.image.value.rgb,
            sized=description is not None and bool(description.object_diameter_px),
        )

    # -- results -----------------------------------------------------------------------------

    def _show_instances(self, result: tuple[LayerDataTuple, KeptProbabilities | None, int]) -> None:
        layer_data, self.live.kept, count = result
        self.show_layer(layer_data)
        took = f"{self.elapsed_s:.1f} s"
        self.status.value = f"{layer_data[1]['name']}: {count} objects in {took}"
        self.status.tooltip = (
            "move the thresholds to re-label at once"
            if self.live.kept is not None
            else "too large to keep its probabilities, or rescaled to an object diameter: "
            "new thresholds apply at the next Run"
        )

    def _show_classes(self, layer_data: LayerDataTuple, description: ModelDescription) -> None:
        """Show semantic labels, or one probability layer per class, named after the class."""
        layers, shown = class_layers(layer_data, description)
        for layer in layers:
            self.show_layer(layer)
        self.status.value = f"{layer_data[1]['name']}: {shown}, in {self.elapsed_s:.1f} s"

    def show_layer(self, layer_data: LayerDataTuple) -> None:
        """Put one result in the viewer, updating the layer of an earlier run."""
        show_layer(self.viewer, layer_data)


def _threshold_fields() -> tuple[FloatSlider, FloatSlider, SpinBox]:
    """Make the instances' thresholds; each change re-labels at once, with no new run."""
    again = " (re-labels at once, no new run)"
    foreground = _threshold_slider(
        "foreground",
        "instances: pixels whose object probability is above this belong to an object; "
        "lower finds larger objects" + again,
    )
    seed = _threshold_slider(
        "seed",
        "instances: objects start where the interior probability (distance models: the "
        "distance to the outline, 1 at centres) is above this; higher splits touching "
        "objects more often but may miss faint ones" + again,
    )
    min_size = SpinBox(
        label="min size (px)",
        min=0,
        max=100_000,
        tooltip="instances: smaller objects are dropped" + again,
    )
    return foreground, seed, min_size


def _threshold_slider(label: str, tooltip: str) -> FloatSlider:
    """Make a probability threshold that applies on release (each change re-labels)."""
    return FloatSlider(label=label, min=0.05, max=0.95, step=0.05, tracking=False, tooltip=tooltip)


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
