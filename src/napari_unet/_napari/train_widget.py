"""The Train dock widget: painted labels in, one :func:`train_on_layers` call in a worker.

The loss and validation score are drawn live; the trained model is saved as a user model and
the Segment widget's model list refreshes at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, LineEdit, SpinBox
from napari.layers import Image, Labels

from napari_unet._napari.job_widget import JobWidget
from napari_unet._napari.layer_data import train_on_layers
from napari_unet._napari.loss_plot import LossPlot
from napari_unet._napari.model_choices import models_changed, saved_models

if TYPE_CHECKING:
    import napari
    from napari_unet.core.train import TrainingProgress


class TrainWidget(JobWidget):
    """Train (or fine-tune) a U-Net on an image and the labels painted over it."""

    run_text = "Train"
    job_name = "training"

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.image = ComboBox(label="image", choices=self.layer_choices(Image))
        self.labels_layer = ComboBox(label="labels", choices=self.layer_choices(Labels))
        self.target = ComboBox(label="target", choices=["instances", "semantic"])
        self.sparse = CheckBox(text="sparse: unpainted pixels are not annotated")
        self.base_model = ComboBox(label="start from", choices=self._start_choices)
        self.epochs = SpinBox(label="epochs", min=1, max=10_000, value=20)
        self.model_name = LineEdit(label="save as", value="my-model")
        self.plot = LossPlot()
        self.add_fields(
            [
                self.image,
                self.labels_layer,
                self.target,
                self.sparse,
                self.base_model,
                self.epochs,
                self.model_name,
            ],
        )
        self.native.layout().addWidget(self.plot)
        self.follow(models_changed, self.base_model.reset_choices)
        self.reset_choices()

    def _start_choices(self, _: Any) -> list[tuple[str, str | None]]:
        return [("new network", None), *saved_models()]

    def start(self) -> None:
        """Train on the chosen layers in a worker."""
        image, labels = self.image.value, self.labels_layer.value
        if image is None or labels is None:
            self.status.value = "choose an image and the Labels layer painted over it"
            return
        self.plot.clear()
        self.launch(
            train_on_layers,
            image,
            labels,
            name=self.model_name.value,
            base_model=self.base_model.value,
            target=self.target.value,
            sparse=self.sparse.value,
            epochs=self.epochs.value,
            progress=self._show_training,
            done=self._saved,
            message=f"training {self.model_name.value} on {labels.name}...",
        )

    def _show_training(self, update: TrainingProgress) -> None:
        step = (update.epoch - 1) * update.steps_per_epoch + update.step
        self.show_progress(step, update.epochs * update.steps_per_epoch)
        if not update.val_metrics:
            self.plot.add("training loss", step, update.train_loss)
        elif "score" in update.val_metrics:
            self.plot.add("validation score", step, update.val_metrics["score"])
        self.status.value = f"epoch {update.epoch}/{update.epochs}, loss {update.train_loss:.3f}"

    def _saved(self, folder: Path) -> None:
        models_changed.emit()
        self.status.value = f"saved {folder.name}"
        self.status.tooltip = f"{folder}; listed in the Segment widget's models"
