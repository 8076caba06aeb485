"""The Segment dock widget: choices in, one :func:`segment_layer` call in a worker, a layer out.

The widget only translates its fields into arguments; the work runs in a napari
``thread_worker`` so the viewer keeps answering, reports progress through the engine's
callback, and stops at the next tile batch when the token is cancelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, Label, ProgressBar, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from napari_unet._napari.layer_data import (
    LayerDataTuple,
    chosen_model,
    model_label,
    remember_model,
    segment_layer,
)
from napari_unet.core.models import ModelDescription, describe_models, load_model
from napari_unet.core.progress import Cancelled, CancelToken

if TYPE_CHECKING:
    import napari

LOAD_FROM_FILE = "load from file..."
OUTPUTS = ("instances", "semantic", "probabilities")


class SegmentWidget(Container):
    """Segment the chosen image layer with a U-Net into a Labels layer over it."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        self._viewer = napari_viewer
        self._loaded: list[str] = []
        self._worker: Any = None
        self._cancel = CancelToken()
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.model = ComboBox(label="model", choices=self._model_choices)
        self.mode = ComboBox(label="mode", choices=[("2D slice by slice", "2D"), ("3D", "3D")])
        self.channel = ComboBox(label="channel", choices=self._channel_choices, nullable=True)
        self.level = SpinBox(label="resolution level", min=0)
        self.output = ComboBox(label="output", choices=OUTPUTS)
        self.device = ComboBox(label="device", choices=_device_choices())
        self.current_slice = CheckBox(text="current slice only (preview)")
        self.advanced = CheckBox(text="advanced")
        self.tile_size = SpinBox(label="tile size (0 = auto)", min=0, max=4096, step=16)
        self.overlap = SpinBox(label="overlap (0 = auto)", min=0, max=1024)
        self.run_button = PushButton(text="Run")
        self.progress = ProgressBar(label="progress", value=0)
        self.status = Label(value="")
        super().__init__(
            widgets=[
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
                self.run_button,
                self.progress,
                self.status,
            ]
        )
        self.image.changed.connect(self._follow_image)
        self.model.changed.connect(self._follow_model)
        self.advanced.changed.connect(self._show_advanced)
        self.run_button.changed.connect(self._run_or_cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.reset_choices()
        if chosen_model() in self.model.choices:
            self.model.value = chosen_model()
        self._show_advanced(False)
        self._follow_model(self.model.value)

    # choices ------------------------------------------------------------------------------
    def _image_choices(self, _: Any) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _model_choices(self, _: Any) -> list[tuple[str, str]]:
        names = [(name, name) for name, _ in describe_models()]
        loaded = [(f"{Path(path).name} ({path})", path) for path in self._loaded]
        return [*names, *loaded, (LOAD_FROM_FILE, LOAD_FROM_FILE)]

    def _channel_choices(self, _: Any) -> list[tuple[str, int | None]]:
        layer = self.image.value
        if layer is None or not layer.rgb:
            return [("all", None)]
        return [("all", None), *((str(c), c) for c in range(layer.data.shape[-1]))]

    # following the user's choices ---------------------------------------------------------
    def _follow_image(self, layer: Image | None) -> None:
        self.channel.reset_choices()
        self.channel.visible = layer is not None and layer.rgb
        self.level.visible = layer is not None and layer.multiscale
        if layer is not None and layer.multiscale:
            self.level.max = len(layer.data) - 1
        self._default_mode()

    def _follow_model(self, model: str | None) -> None:
        if model == LOAD_FROM_FILE:
            self._load_from_file()
            return
        if model is None:
            return
        description = self._description(model)
        self.output.value = description.output_kind
        self._default_mode()

    def _default_mode(self) -> None:
        """3D for a 3D model on a stack; otherwise each plane on its own."""
        layer, model = self.image.value, self.model.value
        stack = layer is not None and layer.ndim >= 3
        self.mode.visible = stack
        if model not in (None, LOAD_FROM_FILE):
            spatial_dims = self._description(model).spatial_dims
            self.mode.value = "3D" if stack and spatial_dims == 3 else "2D"

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

    # running ------------------------------------------------------------------------------
    def _run_or_cancel(self) -> None:
        if self._worker is not None:
            self._cancel.cancel()
            self.status.value = "cancelling..."
            return
        layer = self.image.value
        if layer is None:
            show_info("napari-unet: add or open an image layer to segment first")
            return
        remember_model(self.model.value)
        self._cancel = CancelToken()
        self._worker = create_worker(
            segment_layer,
            layer,
            self.model.value,
            **self.options(),
            progress=ensure_main_thread(self._show_progress),
            cancel=self._cancel,
            _ignore_errors=True,
        )
        self._worker.returned.connect(self._show_result)
        self._worker.errored.connect(self._show_error)
        self._worker.finished.connect(self._finished)
        self.run_button.text = "Cancel"
        self.status.value = f"segmenting {layer.name} with {model_label(self.model.value)}..."
        self.progress.value = 0
        self._worker.start()

    def options(self) -> dict[str, Any]:
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

    def _show_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _show_result(self, layer_data: LayerDataTuple) -> None:
        """Update the layer of an earlier run in place (keeping the user's display settings)."""
        data, meta, kind = layer_data
        name = meta["name"]
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if existing is not None and existing._type_string == kind and existing.ndim == data.ndim:
            existing.data = data
            for key in ("scale", "translate", "affine", "axis_labels", "units"):
                setattr(existing, key, meta[key])
        else:
            if existing is not None:
                self._viewer.layers.remove(existing)
            getattr(self._viewer, f"add_{kind}")(data, **meta)
        self.status.value = f"{name}: done"

    def _show_error(self, error: Exception) -> None:
        if isinstance(error, Cancelled):
            self.status.value = "cancelled"
            return
        self.status.value = "failed"
        show_error(f"napari-unet: segmentation failed: {error}")

    def _finished(self) -> None:
        self._worker = None
        self.run_button.text = "Run"


def _device_choices() -> list[tuple[str, str]]:
    """Devices torch can use here; ``auto`` is labelled with what it resolves to."""
    from napari_unet.core.predict import available_devices, resolve_device

    return [(f"auto ({resolve_device('auto')})", "auto"), *((d, d) for d in available_devices())]


def ask_model_folder() -> str:
    """Ask for a saved model's folder (the one holding ``model.json``); ``""`` if cancelled."""
    from qtpy.QtWidgets import QFileDialog

    return QFileDialog.getExistingDirectory(caption="Choose a napari-unet model folder")
