from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_unet._napari.layer_data import training_pairs
from napari_unet._napari.train_widget import TrainWidget
from napari_unet.core.models import list_models


@pytest.fixture
def painted(make_napari_viewer, tiny_model, blobs):
    """A viewer with the blobs image, a few painted objects, and both docks."""
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    labels = np.zeros(blobs.shape, np.uint8)
    labels[blobs > 100] = 2
    labels[:10] = 1
    viewer.add_labels(labels, name="painted")
    _, segment = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Segment")
    _, train = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Train")
    assert isinstance(train, TrainWidget)
    train.base_model.value = tiny_model
    train.epochs.value = 2
    train.sparse.value = True
    train.model_name.value = "painted-model"
    return viewer, segment, train


def test_training_saves_a_model_the_segment_widget_offers_at_once(painted, qtbot) -> None:
    _, segment, train = painted
    train.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not train.running, timeout=120_000)
    assert train.status.value.startswith("saved painted-model")
    assert "painted-model" in list_models()
    assert "painted-model" in segment.model.choices
    assert len(train.plot.series["training loss"]) >= 2


def test_cancelled_training_saves_nothing(painted, qtbot) -> None:
    _, _, train = painted
    train.run_button.clicked.emit()
    train.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not train.running, timeout=120_000)
    assert train.status.value == "cancelled"
    assert "painted-model" not in list_models()


def test_training_pairs_keep_only_painted_planes() -> None:
    stack = np.random.default_rng(0).random((4, 32, 32))
    labels = np.zeros(stack.shape, np.uint8)
    labels[1, 5:9, 5:9] = 2
    labels[3, 0, 0] = 1
    images, masks = training_pairs(Image(stack), Labels(labels))
    assert len(images) == 2
    np.testing.assert_array_equal(images[0], stack[1])
    np.testing.assert_array_equal(masks[1], labels[3])
