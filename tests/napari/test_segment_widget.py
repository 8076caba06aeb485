from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer

from napari_unet._napari import segment_widget
from napari_unet._napari.segment_widget import LOAD_FROM_FILE, SegmentWidget, open_and_segment
from napari_unet.core.device import resolve_device
from napari_unet.core.models import user_models_dir


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.model.value = tiny_model
    return viewer, widget


def run(widget: SegmentWidget, qtbot) -> None:
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)


def test_run_adds_labels_layer_over_the_image(viewer_and_widget, tiny_model, blobs, qtbot) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs", scale=(0.5, 0.25), translate=(10, 20))
    run(widget, qtbot)
    labels = viewer.layers[f"blobs ({tiny_model})"]
    assert isinstance(labels, Labels)
    assert labels.data.shape == blobs.shape
    assert np.issubdtype(labels.data.dtype, np.integer)
    np.testing.assert_allclose(labels.scale, (0.5, 0.25))
    np.testing.assert_allclose(labels.translate, (10, 20))
    assert widget.run_button.text == "Run"


def test_running_again_updates_the_layer(viewer_and_widget, tiny_model, blobs, qtbot) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs")
    run(widget, qtbot)
    first = viewer.layers[f"blobs ({tiny_model})"]
    run(widget, qtbot)
    assert len(viewer.layers) == 2
    assert viewer.layers[f"blobs ({tiny_model})"] is first


def test_cancel_leaves_no_layer(viewer_and_widget, blobs, qtbot) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(np.tile(blobs, (4, 4)), name="big")
    widget.advanced.value = True
    widget.tile_size.value = 32
    widget.run_button.clicked.emit()
    assert widget.run_button.text == "Cancel"
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert widget.status.value == "cancelled"


def test_image_picker_follows_layers(viewer_and_widget, blobs) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="a")
    viewer.add_image(blobs, name="b")
    assert [layer.name for layer in widget.image.choices] == ["a", "b"]
    viewer.layers.remove("a")
    assert [layer.name for layer in widget.image.choices] == ["b"]


def test_errors_become_notifications(viewer_and_widget, qtbot, monkeypatch) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((2, 3, 4, 5, 6), np.uint8), name="5d")
    shown = []
    monkeypatch.setattr("napari_unet._napari.job_widget.show_error", shown.append)
    run(widget, qtbot)
    assert "segmentation failed" in shown[0]
    assert widget.status.value == "failed"


def test_current_slice_only_segments_the_shown_plane(
    viewer_and_widget, tiny_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(np.stack([blobs] * 5), name="stack", scale=(3.0, 1.0, 1.0))
    viewer.dims.set_current_step(0, 2)
    widget.current_slice.value = True
    run(widget, qtbot)
    preview = viewer.layers[f"stack ({tiny_model})"]
    assert preview.data.shape == (1, *blobs.shape)
    np.testing.assert_allclose(preview.translate, (6.0, 0, 0))


def test_probabilities_output_is_an_image_with_a_class_axis(
    tiny_model, viewer_and_widget, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs", scale=(0.5, 0.5))
    widget.output.value = "probabilities"
    run(widget, qtbot)
    probabilities = viewer.layers[f"blobs ({tiny_model}) probabilities"]
    assert isinstance(probabilities, Image)
    assert probabilities.data.shape == (3, *blobs.shape)
    np.testing.assert_allclose(probabilities.scale, (1.0, 0.5, 0.5))


def test_open_and_segment_adds_image_and_labels(
    make_napari_viewer, tiny_model, blobs, tmp_path, qtbot, monkeypatch
) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Segment")
    widget.model.value = tiny_model
    tifffile.imwrite(tmp_path / "blobs.tif", blobs)
    monkeypatch.setattr(segment_widget, "ask_image_file", lambda: str(tmp_path / "blobs.tif"))
    open_and_segment(viewer)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["blobs", f"blobs ({tiny_model})"]


def test_rgb_layer_offers_all_channels_or_one(viewer_and_widget, tiny_model, blobs, qtbot) -> None:
    viewer, widget = viewer_and_widget
    rgb = np.stack([blobs, blobs // 2, blobs // 4], axis=-1)
    viewer.add_image(rgb, name="rgb", rgb=True)
    assert not widget.channel.native.isHidden()
    assert widget.channel.choices == (None, 0, 1, 2)
    widget.channel.value = 1
    run(widget, qtbot)
    assert viewer.layers[f"rgb ({tiny_model})"].data.shape == blobs.shape


def test_model_can_be_loaded_from_a_folder(viewer_and_widget, tiny_model, monkeypatch) -> None:
    _, widget = viewer_and_widget
    folder = str(user_models_dir() / tiny_model)
    monkeypatch.setattr(segment_widget, "ask_model_folder", lambda: folder)
    widget.model.value = LOAD_FROM_FILE
    assert widget.model.value == folder
    assert widget.output.value == "instances"


def test_device_shows_what_auto_resolves_to(viewer_and_widget) -> None:
    _, widget = viewer_and_widget
    assert widget.device.value == "auto"
    assert widget.device.native.currentText() == f"auto ({resolve_device('auto')})"


def test_3d_model_on_a_stack_defaults_to_3d_and_keeps_the_stack_shape(
    viewer_and_widget, tiny_3d_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(np.stack([blobs[:64, :64]] * 8), name="volume")
    widget.model.value = tiny_3d_model
    assert widget.mode.value == "3D"
    run(widget, qtbot)
    assert viewer.layers[f"volume ({tiny_3d_model})"].data.shape == (8, 64, 64)


def test_viewer_keeps_answering_while_segmenting(viewer_and_widget, blobs, qtbot) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(np.tile(blobs, (4, 4)), name="big")
    widget.advanced.value = True
    widget.tile_size.value = 32
    ticks_while_running = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks_while_running.append(widget.running))
    timer.start(10)
    run(widget, qtbot)
    timer.stop()
    assert sum(ticks_while_running) >= 3
