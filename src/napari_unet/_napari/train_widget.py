"""The Train dock widget: painted labels in, one :func:`train_on_layers` call in a worker.

Painting is made safe first: the dock says what each label value means for the chosen target
and mode, its *new labels layer* button starts on the first object label, and a painting that
would teach nothing (objects in the background label, a single class) is refused before any
compute. It fine-tunes the matching built-in model by default, asks before saving over a
model, draws the loss and validation score live, and the Segment dock lists the result at once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, LineEdit, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QMessageBox, QSizePolicy

from napari_unet._napari.job_widget import JobWidget
from napari_unet._napari.loss_plot import LossPlot
from napari_unet._napari.model_choices import models_changed, saved_models
from napari_unet._napari.prediction_fields import option_field
from napari_unet._napari.training_layers import train_on_layers
from napari_unet.core.train.options import TrainOptions

if TYPE_CHECKING:
    import napari
    from napari_unet.core.train.loop import TrainingProgress

BUILTIN_FOR_TARGET = {"instances": "nuclei", "semantic": "em-membranes"}
"""The built-in model that fine-tuning starts from by default, per target."""

FIRST_OBJECT_LABEL = 2
"""With sparse labels, 1 is background (or the first class): painting starts on 2."""

START_FROM_TIP = "fine-tune this model (needs far fewer labels) or train a new network"


def painting_convention(target: str, sparse: bool, class_names: list[str]) -> str:
    """Say in one line what each label value means when training on painted labels."""
    if target == "instances":
        if sparse:
            return (
                "paint 1 on some background and 2, 3, ... on whole objects (one label each); "
                "unpainted pixels are ignored"
            )
        return "one label per object; everything unpainted (0) is background"
    names = class_names or ["class 0", "class 1"]
    if sparse:
        meaning = ", ".join(f"{k + 1} = {name}" for k, name in enumerate(names))
        return f"paint {meaning}; unpainted pixels are ignored"
    meaning = ", ".join(f"{k} = {name}" for k, name in enumerate(names))
    return f"every pixel counts: {meaning}"


def painting_problem(labels: np.ndarray, target: str, sparse: bool) -> str | None:
    """Say why these painted labels would teach nothing useful, or return ``None``."""
    values = np.unique(labels)
    painted = values[values > 0]
    if painted.size == 0:
        return "nothing is painted yet: paint a few objects first"
    if sparse and target == "instances":
        if not (painted >= FIRST_OBJECT_LABEL).any():
            return (
                "only label 1 is painted, and with sparse labels 1 means background: paint "
                "objects with labels 2, 3, ... (or untick sparse)"
            )
        if 1 not in painted:
            return "no background is painted: with sparse labels paint some background with 1"
    if sparse and target == "semantic" and painted.size < 2:
        return (
            f"only label {painted[0]} is painted: paint at least two classes "
            "(with sparse labels 1 is the first class, 2 the second...)"
        )
    return None


TRAIN_TABLE = dataclasses.fields(TrainOptions)
"""The training options' table: the dock's fields take their labels and help from it."""


class TrainWidget(JobWidget):
    """Train (or fine-tune) a U-Net on an image and the labels painted over it."""

    run_text = "Train"
    job_name = "training"

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.image = ComboBox(
            label="image", choices=self.layer_choices(Image), tooltip="the image to learn from"
        )
        self.new_labels = PushButton(
            text="new labels layer",
            tooltip="add an empty Labels layer over the image, its brush on the first object label",
        )
        self.labels_layer = ComboBox(
            label="labels",
            choices=self.layer_choices(Labels),
            tooltip="the Labels layer painted over the image",
        )
        self.target = option_field("target", ComboBox, table=TRAIN_TABLE)
        self.sparse = option_field(
            "sparse",
            CheckBox,
            table=TRAIN_TABLE,
            note="train on what is painted only, so a few objects are enough",
            text="sparse: unpainted pixels are not annotated",
            value=True,
        )
        self.convention = Label(value="")
        # the help line wraps, and its width never widens the dock (and shrinks the canvas)
        self.convention.native.setWordWrap(True)
        self.convention.native.setSizePolicy(
            QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred
        )
        self.base_model = ComboBox(
            label="start from", choices=self._start_choices, tooltip=START_FROM_TIP
        )
        self.minutes = option_field(
            "minutes",
            FloatSpinBox,
            table=TRAIN_TABLE,
            note="a new network needs hours",
            min=0.05,
            max=24 * 60,
            step=0.5,
            value=5.0,
        )
        self.model_name = LineEdit(
            label="save as", value="my-model", tooltip="name of the trained model in model lists"
        )
        self.plot = LossPlot()
        self.add_fields(
            [
                self.image,
                self.new_labels,
                self.labels_layer,
                self.target,
                self.sparse,
                self.convention,
                self.base_model,
                self.minutes,
                self.model_name,
            ],
        )
        self.native.layout().addWidget(self.plot)
        self.follow(models_changed, self.base_model.reset_choices)
        self.reset_choices()
        self.base_model.value = self._matching_builtin()
        self.new_labels.changed.connect(self.add_labels_layer)
        self.target.changed.connect(self._target_changed)
        for field in (self.sparse, self.base_model):
            field.changed.connect(self._show_convention)
        self._show_convention()

    def _start_choices(self, _: Any) -> list[tuple[str, str | None]]:
        return [("new network", None), *saved_models()]

    def _matching_builtin(self) -> str | None:
        name = BUILTIN_FOR_TARGET[self.target.value]
        return name if name in [value for _, value in self._start_choices(None)] else None

    def _target_changed(self) -> None:
        if self.base_model.value in (None, *BUILTIN_FOR_TARGET.values()):
            self.base_model.value = self._matching_builtin()
        self._show_convention()

    def _show_convention(self) -> None:
        from napari_unet.core.models.registry import describe_models

        card = dict(describe_models()).get(self.base_model.value)
        classes = (
            list(card.class_names) if card is not None and self.target.value == "semantic" else []
        )
        text = painting_convention(self.target.value, self.sparse.value, classes)
        self.convention.value = text
        self.convention.tooltip = text
        described = card.description if card is not None else ""
        self.base_model.tooltip = (
            f"{START_FROM_TIP}\n\n{described}" if described else START_FROM_TIP
        )

    def add_labels_layer(self) -> Labels | None:
        """Add an empty Labels layer over the chosen image, ready to paint the first object."""
        image = self.image.value
        if image is None:
            self.refuse("open an image first")
            return None
        shape = image.data.shape[:-1] if image.rgb else image.data.shape
        labels = self._viewer.add_labels(
            np.zeros(shape, np.uint16),
            name=f"{image.name} labels",
            scale=image.scale,
            translate=image.translate,
        )
        labels.selected_label = FIRST_OBJECT_LABEL if self.sparse.value else 1
        labels.mode = "paint"
        self.labels_layer.value = labels
        return labels

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question in a dialog; ``True`` for yes."""
        answer = QMessageBox.question(self.native, "napari-unet", question)
        return answer == QMessageBox.StandardButton.Yes

    def start(self) -> None:
        """Check the painting and the name, then train on the chosen layers in a worker."""
        from napari_unet.core.models.registry import list_models

        image, labels = self.image.value, self.labels_layer.value
        name = self.model_name.value.strip()
        if image is None or labels is None:
            self.refuse("choose an image and the Labels layer painted over it")
            return
        problem = painting_problem(np.asarray(labels.data), self.target.value, self.sparse.value)
        if problem is not None:
            self.refuse(problem)
            return
        if not name:
            self.refuse("give the model a name to save it under")
            return
        if name in list_models(include_user=False):
            self.refuse(f"{name!r} is a built-in model: save under another name")
            return
        if name in list_models() and not self.confirm(
            f"A model named {name!r} exists. Replace it with the one trained now?"
        ):
            self.refuse(f"not started: {name!r} is kept; choose another name")
            return
        try:  # the engine's checks, before any work
            options = TrainOptions(
                target=self.target.value, sparse=self.sparse.value, minutes=self.minutes.value
            )
        except ValueError as error:
            self.refuse(f"cannot run: {error}")
            return
        self.plot.clear()
        self.launch(
            train_on_layers,
            image,
            labels,
            name=name,
            base_model=self.base_model.value,
            options=options,
            progress=self._show_training,
            done=self._saved,
            message=f"training {name} on {labels.name}...",
        )

    def _show_training(self, update: TrainingProgress) -> None:
        self.show_progress(round(1000 * update.done), 1000)
        if update.phase != "training":  # the work after the epochs, named, never a silent 100%
            self.status.value = f"{update.phase}... ({update.done:.0%} of the time)"
            return
        step = (update.epoch - 1) * update.steps_per_epoch + update.step
        if not update.val_metrics:
            self.plot.add("training loss", step, update.train_loss)
        elif "score" in update.val_metrics:
            self.plot.add("validation score", step, update.val_metrics["score"])
        self.status.value = (
            f"epoch {update.epoch}, {update.done:.0%} done, loss {update.train_loss:.3f}"
        )

    def _saved(self, folder: Path) -> None:
        """Say where the model went and, for a fine-tune, whether it beat its base model.

        A worse model is saved (the user may still want it) but the Segment dock keeps its
        choice, and a warning says to keep the base model.
        """
        from napari_unet.core.models.registry import read_description
        from napari_unet.core.train.finetune_check import FineTuneReport

        models_changed.emit()
        card = read_description(folder)
        check = FineTuneReport.from_metrics(card.metrics)
        self.status.value = f"saved {folder.name}" + (
            "" if check is None else f": {check.summary()}"
        )
        self.status.tooltip = (
            f"{folder}; listed in the Segment widget's models\n\n{card.description}"
        )
        if check is not None and check.verdict == "worse":
            show_warning(
                f"napari-unet: {folder.name} is worse than {check.base}: {check.summary()}"
            )
