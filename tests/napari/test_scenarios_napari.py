"""Scenarios in a viewer with the real built-in models on crops of the real data.

Re-running Segment on a multiscale OME-Zarr layer (it failed the second time) must update
the same layer with the same objects; the EM sample must open with the EM model chosen; and
EM membranes, class 0 of ``em-membranes``, must be drawn (napari draws label 0 transparent
unless told otherwise), both in the layer's colours and on the rendered canvas.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from qtpy.QtWidgets import QApplication

from napari_unet.core.predict.predictor import segment
from ngff import ngff_image

PLUGIN = "napari-unet-segment"

DSB_IMAGE = "a90cad45551d62c5cfa89517df8eb5e8f2f87f1a6e6678e606907afcbad91731"
"""A 520x696 fluorescence image of the DSB 2018 validation split with 140 nuclei."""


def _run(widget, qtbot) -> str:
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    return widget.status.value


def _object_count(status: str) -> int:
    """Read ``<layer>: <count> objects in <seconds> s``."""
    return int(status.split(": ")[1].split()[0])


def test_segmenting_a_multiscale_ome_zarr_twice_updates_the_layer(
    make_napari_viewer, shared_data, tmp_path, qtbot
) -> None:
    dsb = shared_data / "dsb2018" / "val"
    image = tifffile.imread(dsb / "images" / f"{DSB_IMAGE}.tif")
    truth = int(tifffile.imread(dsb / "masks" / f"{DSB_IMAGE}.tif").max())
    container = ngff_image(tmp_path / "nuclei.ome.zarr", image[np.newaxis], pixel_size=(0.4, 0.4))
    viewer = make_napari_viewer()
    [layer] = viewer.open(container, plugin=PLUGIN)
    assert layer.multiscale and len(layer.data) == 2
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    widget.model.value = "nuclei"
    first = _object_count(_run(widget, qtbot))
    labels = viewer.layers[f"{layer.name} (nuclei)"]
    assert labels.multiscale and len(labels.data) == 3  # 520x696, 260x348, 130x174
    second = _object_count(_run(widget, qtbot))
    assert viewer.layers[f"{layer.name} (nuclei)"] is labels and len(viewer.layers) == 2
    assert second == first and abs(first - truth) <= 0.15 * truth  # 140 painted nuclei
    np.testing.assert_allclose(labels.scale, (0.4, 0.4))
    expected = segment(np.asarray(layer.data[0]), "nuclei", axes="YX", output="instances")
    assert int(expected.max()) == second  # what the API gives on the same pixels


def test_the_em_sample_picks_the_em_model_and_its_membranes_are_drawn(
    make_napari_viewer, qtbot
) -> None:
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    [image] = viewer.open_sample(PLUGIN, "em")
    assert widget.model.value == "em-membranes" and widget.output.value == "semantic"
    _run(widget, qtbot)
    classes = viewer.layers["em (em-membranes) classes"]
    membrane = np.asarray(classes.data) == 0
    assert 0.15 < membrane.mean() < 0.30  # ISBI: 17-27% of each slice is membrane
    image.visible = False  # the labels alone: membranes green, interiors magenta
    viewer.reset_view()
    QApplication.processEvents()
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    red, green, blue = canvas[..., 0], canvas[..., 1], canvas[..., 2]
    drawn_membrane = (green > 100) & (red < 60) & (blue < 60)
    drawn_interior = (red > 100) & (blue > 100) & (green < 60)
    shown = drawn_membrane.sum() / (drawn_membrane.sum() + drawn_interior.sum())
    assert shown == pytest.approx(membrane.mean(), abs=0.03)


def test_isbi_membranes_are_visible_labels_in_their_true_share(
    make_napari_viewer, shared_data, qtbot
) -> None:
    isbi = shared_data / "isbi2012"
    crop = (slice(5, 6), slice(128, 384), slice(128, 384))
    volume = tifffile.imread(isbi / "train-volume.tif")[crop][0]
    truth = tifffile.imread(isbi / "train-labels.tif")[crop][0] == 0  # 0 = membrane
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="isbi")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    widget.model.value = "em-membranes"
    widget.output.value = "semantic"
    _run(widget, qtbot)
    classes = viewer.layers["isbi (em-membranes) classes"]
    values = np.asarray(classes.data)
    visible = classes.colormap.map(values)[..., 3] > 0
    assert visible[values == 0].mean() == 1.0  # every membrane pixel is drawn
    assert list(classes.features["class"]) == ["membrane", "interior"]
    assert (values == 0).mean() == pytest.approx(truth.mean(), abs=0.05)
