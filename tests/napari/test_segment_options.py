"""The Segment dock's options: built from the engine's option table, checked by the engine,
and kept with the result as provenance."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from dock_helpers import run

import napari_unet
from napari_unet._napari import prediction_fields
from napari_unet._napari.segment_widget import SegmentWidget
from napari_unet.core.predict.options import PredictOptions, option_fields
from napari_unet.core.predict.predictor import segment

FIELDS = {
    "channel": "channel",
    "diameter": "diameter",
    "device": "device",
    "precision": "precision",
    "tta": "test_time_augmentation",
    "tile_size": "tile_shape",
    "overlap": "overlap",
}
"""The dock's fields of engine options, and the option each one sets."""


def test_option_fields_are_labelled_and_explained_by_the_option_table(viewer_and_widget) -> None:
    _, widget = viewer_and_widget
    table = {option.name: option.metadata for option in option_fields()}
    for field, option in FIELDS.items():
        shown, meta = getattr(widget, field), table[option]
        assert shown.tooltip.startswith(meta["help"]), field
        assert shown.label.startswith(meta["flag"].removeprefix("--")), field
    assert widget.precision.choices == table["precision"]["choices"]
    assert widget.tta.choices == (None, True, False)  # None: as the model's card says


def test_a_changed_option_table_changes_the_dock(make_napari_viewer, monkeypatch) -> None:
    real = list(option_fields())
    tile = next(option for option in real if option.name == "tile_shape")

    @dataclasses.dataclass
    class Changed:
        tile_shape: int = dataclasses.field(
            default=0, metadata={**tile.metadata, "flag": "--edge", "help": "new words"}
        )

    [changed] = dataclasses.fields(Changed)
    table = [changed if option is tile else option for option in real]
    monkeypatch.setattr(prediction_fields, "option_fields", lambda: iter(table))
    widget = SegmentWidget(make_napari_viewer())
    assert widget.tile_size.tooltip.startswith("new words;")
    assert widget.tile_size.label.startswith("edge (px")


def test_an_option_the_model_cannot_take_ends_the_job_with_the_engine_message(
    viewer_and_widget, tiny_model, blobs, qtbot, monkeypatch
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs")
    widget.tile_size.value = 1
    shown = []
    monkeypatch.setattr("napari_unet._napari.job_widget.show_error", shown.append)
    run(widget, qtbot)
    with pytest.raises(ValueError, match="tile") as engine:
        segment(blobs, tiny_model, tile_shape=1)
    assert widget.status.value == f"failed: {engine.value}"
    assert str(engine.value) in shown[0]
    assert [layer.name for layer in viewer.layers] == ["blobs"]


def test_an_option_the_engine_refuses_is_refused_before_the_job(
    viewer_and_widget, blobs, monkeypatch
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs")
    # the pickers offer only valid values; a field holding another one stands for a future field
    monkeypatch.setitem(widget.prediction, "precision", SimpleNamespace(value="fp8"))
    shown = []
    monkeypatch.setattr("napari_unet._napari.job_widget.show_info", shown.append)
    widget.run_button.clicked.emit()
    with pytest.raises(ValueError) as engine:
        PredictOptions(precision="fp8")
    assert not widget.running
    assert widget.status.value == f"cannot run: {engine.value}"
    assert str(engine.value) in shown[0]


def test_a_result_layer_carries_its_provenance_with_the_dock_options(
    viewer_and_widget, tiny_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs")
    widget.device.value, widget.tile_size.value, widget.overlap.value = "cpu", 64, 8
    widget.tta.value = True
    run(widget, qtbot)
    layer = viewer.layers[f"blobs ({tiny_model})"]
    record = layer.metadata["napari_unet"]
    options = PredictOptions(
        output="instances", device="cpu", tile_shape=64, overlap=8, test_time_augmentation=True
    )
    assert record["options"] == options.as_dict()
    assert (record["input"], record["model"]["name"]) == ("blobs", tiny_model)
    assert record["napari_unet"] == napari_unet.__version__
    assert record["thresholds"] == widget.thresholds()
    widget.min_size.value = 40  # re-labelled live: the record follows
    assert layer.metadata["napari_unet"]["thresholds"]["min_size"] == 40
    widget.output.value = "semantic"
    run(widget, qtbot)
    classes = viewer.layers[f"blobs ({tiny_model}) classes"].metadata["napari_unet"]
    assert classes["options"] == dataclasses.replace(options, output="semantic").as_dict()
