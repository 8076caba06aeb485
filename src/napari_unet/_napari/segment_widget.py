"""The Segment dock widget: its fields become one :func:`segment_layer` call in a worker.

The result lands as a Labels layer named after the image and the model, placed over the image;
running again updates that layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, SpinBox
from napari.layers import Image, Labels
from napari.utils.notifications import show_info
from napari.viewer import Viewer

from napari_unet._napari.job_widget import JobWidget
from napari_unet._napari.layer_data import LayerDataTuple, segment_layer
from napari_unet._napari.model_choices import (
    default_model,
    model_label,
    models_changed,
    saved_models,
)
from napari_unet.core.models import ModelDescription, describe_models, load_model

LOAD_FROM_FILE = "load from file..."
OUTPUTS = ("instances", "semantic", "probabilities")
PLACEMENT = ("scale", "translate", "affine", "axis_labels", "units")
LAYER_TYPES = {"image": Image, "labels": Labels}


class SegmentWidget(JobWidget):
    """Segment the chosen image layer with a U-Net into a Labels layer over it."""

    job_name = "segmentation"

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(napari_viewer)
        self._loaded: list[str] = []
        self.image = ComboBox(label="image", choices=self.layer_choices(Image))
        self.model = ComboBox(label="model", choices=self._model_choices)
        self.mode = ComboBox(label="mode", choices=[("2D slice by slice", "2D"), ("3D", "3D")])
        self.channel = ComboBox(label="channel", choices=self._channel_choices)
        self.level = SpinBox(label="resolution level", min=0)
        self.output = ComboBox(label="output", choices=OUTPUTS)
        self.device = ComboBox(label="device", choices=_device_choices())
        self.current_slice = CheckBox(text="current slice only (preview)")
        self.advanced = CheckBox(text="advanced")
        self.tile_size = SpinBox(label="tile size (0 = auto)", min=0, max=4096, step=16)
        self.overlap = SpinBox(label="overlap (0 = auto)", min=0, max=1024)
        self.add_fields(
            [
                self.image,
                self.model,
                self.mode,
                self.channel,
                self.level,
                self.output,
                self.device,
                self.current_slice,
                self.advanced,
                self.tile_size,
                self.overlap,
            ],
        )
        self.image.changed.connect(self._follow_image)
        self.model.changed.connect(self._follow_model)
        self.advanced.changed.connect(self._show_advanced)
        self.follow(models_changed, self.model.reset_choices)
        self.reset_choices()
        if default_model() in self.model.choices:
            self.model.value = default_model()
        self._show_advanced(False)
        self._follow_image(self.image.value)
        if self.model.value != LOAD_FROM_FILE:  # no model at all: ask only when the user picks it
            self._follow_model(self.model.value)

    def _model_choices(self, _: Any) -> list[tuple[str, str]]:
        loaded = [(f"{Path(path).name} ({path})", path) for path in self._loaded]
        return [*saved_models(), *loaded, (LOAD_FROM_FILE, LOAD_FROM_FILE)]

    def _channel_choices(self, _: Any) -> list[tuple[str, int | None]]:
        layer = self.image.value
        channels = _channel_count(layer) if layer is not None and layer.rgb else 0
        return [("all", None), *((str(c), c) for c in range(channels))]

    def _follow_image(self, layer: Image | None) -> None:
        self.channel.reset_choices()
        self.channel.visible = layer is not None and layer.rgb
        self.level.visible = layer is not None and layer.multiscale
        if layer is not None and layer.multiscale:
            self.level.max = len(layer.data) - 1
        self._defaults()

    def _follow_model(self, model: str | None) -> None:
        if model == LOAD_FROM_FILE:
            self._load_from_file()
        elif model is not None:
            self.output.value = self._description(model).output_kind
            self._defaults()

    def _defaults(self) -> None:
        """Use 3D for a 3D model on a stack; otherwise segment each plane on its own."""
        layer, model = self.image.value, self.model.value
        stack = layer is not None and layer.ndim >= 3
        self.mode.visible = stack
        if model not in (None, LOAD_FROM_FILE):
            description = self._description(model)
            self.mode.value = "3D" if stack and description.spatial_dims == 3 else "2D"

    def _description(self, model: str) -> ModelDescription:
        return dict(describe_models()).get(model) or load_model(model).description

    def _load_from_file(self) -> None:
        folder = ask_model_folder()
        if folder:
            self._loaded.append(folder)
        self.model.reset_choices()
        self.model.value = folder or self.model.choices[0]

    def _show_advanced(self, shown: bool) -> None:
        self.tile_size.visible = self.overlap.visible = shown

    def start(self) -> None:
        """Segment the chosen layer with the chosen model in a worker."""
        layer, model = self.image.value, self.model.value
        if layer is None:
            show_info("napari-unet: add or open an image layer to segment first")
            return
        self.launch(
            segment_layer,
            layer,
            model,
            **self.segment_options(),
            done=self._show_result,
            message=f"segmenting {layer.name} with {model_label(model)}...",
        )

    def segment_options(self) -> dict[str, Any]:
        """Translate the fields into :func:`segment_layer` keyword arguments."""
        layer = self.image.value
        return {
            "output": self.output.value,
            "mode": self.mode.value if layer.ndim >= 3 else None,
            "channel": self.channel.value if layer.rgb else None,
            "level": self.level.value if layer.multiscale else 0,
            "position": self._viewer.dims.point if self.current_slice.value else None,
            "device": self.device.value,
            "tile_shape": self.tile_size.value or None,
            "overlap": self.overlap.value or None,
        }

    def _show_result(self, layer_data: LayerDataTuple) -> None:
        """Update the layer of an earlier run in place, keeping the user's display settings."""
        data, meta, kind = layer_data
        name = meta["name"]
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if (
            existing is not None
            and isinstance(existing, LAYER_TYPES[kind])
            and existing.ndim == data.ndim
        ):
            existing.data = data
            for key in PLACEMENT:
                setattr(existing, key, meta[key])
        else:
            if existing is not None:
                self._viewer.layers.remove(existing)
            getattr(self._viewer, f"add_{kind}")(data, **meta)
        self.status.value = f"{name}: done"


def _channel_count(layer: Image) -> int:
    """Channels of an RGB(A) layer (the last axis of its data, or of its first level)."""
    return (layer.data[0] if layer.multiscale else layer.data).shape[-1]


def _device_choices() -> list[tuple[str, str]]:
    """List the devices torch can use here, ``auto`` labelled with what it resolves to."""
    from napari_unet.core.device import available_devices, resolve_device

    return [(f"auto ({resolve_device('auto')})", "auto"), *((d, d) for d in available_devices())]


def ask_model_folder() -> str:
    """Ask for a saved model's folder (the one holding ``model.json``); ``""`` if cancelled."""
    from qtpy.QtWidgets import QFileDialog

    return QFileDialog.getExistingDirectory(caption="Choose a napari-unet model folder")


def open_and_segment(viewer: Viewer) -> None:
    """Open an image file and segment it at once with the Segment widget's model and options.

    A menu command rather than a second reader: npe2 tries one plugin's readers for the same
    pattern in no fixed order, so a second ``*.tif`` reader would sometimes win a plain open.
    """
    path = ask_image_file()
    if not path:
        return
    images = [
        layer for layer in viewer.open(path, plugin="napari-unet-segment") if isinstance(layer, Image)
    ]
    if not images:
        show_info(f"napari-unet: {Path(path).name} holds labels, not an image to segment")
        return
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Segment")
    widget.image.value = images[0]
    widget.start()


def ask_image_file() -> str:
    """Ask for an image file to open; ``""`` if cancelled."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(
        caption="Open and segment", filter="Images (*.tif *.tiff *.ome.tif)"
    )
    return path
