from __future__ import annotations

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import QThreadPool

from napari_unet._napari import segment_widget
from napari_unet._napari.job_widget import PLUGIN_NAME, _cancel_all_and_wait, running_job
from napari_unet._napari.segment_widget import open_and_segment


@pytest.fixture
def busy_viewer(make_napari_viewer, tiny_model, blobs):
    """A viewer whose Segment dock runs a job of many small tiles (seconds on 2 cores)."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, "Segment")
    widget.model.value = tiny_model
    viewer.add_image(np.tile(blobs, (6, 6)), name="big")
    widget.advanced.value = True
    widget.tile_size.value = 32
    widget.start()
    assert running_job(viewer) is widget
    return viewer, widget


def test_a_second_job_is_refused_and_cancel_still_reaches_the_first(
    busy_viewer, blobs, tmp_path, qtbot, monkeypatch
) -> None:
    viewer, widget = busy_viewer
    shown = []
    monkeypatch.setattr(segment_widget, "show_info", shown.append)
    tifffile.imwrite(tmp_path / "other.tif", blobs)
    monkeypatch.setattr(segment_widget, "ask_image_file", lambda: str(tmp_path / "other.tif"))
    open_and_segment(viewer)  # the menu command
    assert "segmentation is running" in shown[0]
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, "Train")
    assert not train.launch(sorted, [], done=print, message="x")  # any other dock
    assert train.status.value.startswith("busy: a segmentation runs in this viewer")
    assert [layer.name for layer in viewer.layers] == ["big"]
    widget.run_button.clicked.emit()  # Cancel
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.status.value == "cancelled"
    assert running_job(viewer) is None
    assert train.status.value == "ready: the segmentation has ended"  # no longer "busy"


def test_closing_the_viewer_cancels_its_job(busy_viewer, qtbot) -> None:
    viewer, widget = busy_viewer
    token = widget._cancel
    viewer.close()
    assert token.cancelled
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)


def test_leaving_python_cancels_the_job_and_waits_for_its_thread(busy_viewer) -> None:
    # What atexit runs. A subprocess that leaves Python mid-job (exit code 0, no traceback;
    # before, "Aborted" with a traceback) was checked by hand: it takes ~20 s to start napari.
    _, widget = busy_viewer
    token = widget._cancel
    _cancel_all_and_wait()
    assert token.cancelled
    assert QThreadPool.globalInstance().activeThreadCount() == 0
