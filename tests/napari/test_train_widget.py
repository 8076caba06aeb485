from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_unet._napari.loss_plot import LossPlot, nice_ticks
from napari_unet._napari.train_widget import TrainWidget, painting_problem
from napari_unet._napari.training_layers import training_pairs
from napari_unet.core.models.registry import list_models, load_model, save_model, user_models_dir


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
    train.minutes.value = 0.15  # 9 seconds: dozens of steps of the tiny model
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
    assert train.status.value.startswith("cancelled")
    assert "painted-model" not in list_models()


def test_saving_over_an_existing_model_asks_first(painted, qtbot, tiny_model) -> None:
    _, _, train = painted
    save_model(load_model(tiny_model), user_models_dir() / "painted-model")
    questions: list[str] = []
    train.confirm = lambda question: questions.append(question) or False
    train.run_button.clicked.emit()
    assert not train.running and "'painted-model' is kept" in train.status.value
    assert load_model("painted-model").description.name == tiny_model
    train.confirm = lambda question: questions.append(question) or True
    train.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not train.running, timeout=120_000)
    assert len(questions) == 2 and "Replace it" in questions[0]
    assert load_model("painted-model").description.name == "painted-model"


def test_objects_painted_with_the_default_label_are_refused_before_any_compute(painted) -> None:
    viewer, _, train = painted
    viewer.layers["painted"].data = np.where(viewer.layers["painted"].data == 2, 1, 0)
    train.run_button.clicked.emit()
    assert not train.running
    assert "only label 1 is painted" in train.status.value
    assert "painted-model" not in list_models()


def test_the_dock_fine_tunes_the_matching_built_in_and_shows_what_labels_mean(
    make_napari_viewer, models_dir, blobs
) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    _, train = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Train")
    assert train.sparse.value and train.base_model.value == "nuclei"
    assert "paint 1 on some background and 2, 3" in train.convention.value
    train.target.value = "semantic"
    assert train.base_model.value == "em-membranes"
    assert train.convention.value.startswith("paint 1 = membrane, 2 = interior")
    train.sparse.value = False
    assert train.convention.value.startswith("every pixel counts: 0 = membrane, 1 = interior")
    train.new_labels.clicked.emit()
    layer = viewer.layers["blobs labels"]
    assert isinstance(layer, Labels) and layer.data.shape == blobs.shape
    assert train.labels_layer.value is layer
    train.sparse.value = True
    train.new_labels.clicked.emit()
    assert viewer.layers[-1].selected_label == 2  # sparse: 1 is background, objects start at 2


@pytest.mark.parametrize(
    ("values", "target", "sparse", "problem"),
    [
        ([0], "instances", False, "nothing is painted"),
        ([0, 1], "instances", True, "only label 1 is painted"),
        ([0, 2, 3], "instances", True, "no background is painted"),
        ([0, 1, 2, 3], "instances", True, None),
        ([0, 1], "instances", False, None),
        ([0, 2], "semantic", True, "only label 2 is painted"),
        ([0, 1, 2], "semantic", True, None),
    ],
)
def test_paintings_that_would_teach_nothing_are_named(values, target, sparse, problem) -> None:
    found = painting_problem(np.array(values), target, sparse)
    assert found == problem if problem is None else problem in found


def test_training_pairs_keep_only_painted_planes() -> None:
    stack = np.random.default_rng(0).random((4, 32, 32))
    labels = np.zeros(stack.shape, np.uint8)
    labels[1, 5:9, 5:9] = 2
    labels[3, 0, 0] = 1
    images, masks = training_pairs(Image(stack), Labels(labels))
    assert len(images) == 2
    np.testing.assert_array_equal(images[0], stack[1])
    np.testing.assert_array_equal(masks[1], labels[3])


def test_axis_ticks_are_round_numbers_covering_the_range() -> None:
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0.213, 0.688) == [0.3, 0.4, 0.5, 0.6]
    assert nice_ticks(1.0, 1.0) == [1.0]


def test_the_loss_plot_labels_its_axes(qtbot) -> None:
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(320, 220)
    for step in range(1, 41):
        plot.add("training loss", step, 1.0 / step)
    plot.add("validation score", 40, 0.7)
    image = plot.grab().toImage()
    area = plot.plot_area()
    background = image.pixelColor(2, 2)

    def drawn(xs: range, ys: range) -> int:
        return sum(image.pixelColor(x, y) != background for x in xs for y in ys)

    beside = range(area.top(), area.bottom())
    assert drawn(range(2, area.left() - 6), beside) > 20  # the loss axis
    assert drawn(range(area.right() + 6, plot.width() - 2), beside) > 20  # the score axis
    below = range(area.bottom() + 6, area.bottom() + 30)
    assert drawn(range(area.left(), area.right()), below) > 40  # steps and their title


def test_the_help_line_wraps_so_the_dock_stays_narrow(make_napari_viewer, models_dir) -> None:
    """Unwrapped, this 104-character line asked for a 781 px dock (a 320 px canvas at 1500)."""
    viewer = make_napari_viewer()
    _, train = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Train")
    assert len(train.convention.value) > 100  # the sparse instances convention, the longest
    assert train.native.sizeHint().width() < 450
    assert train.native.minimumSizeHint().width() < 450
    label = train.convention.native
    assert label.heightForWidth(300) >= 2 * label.fontMetrics().height()  # wrapped, not cut


def test_the_dock_names_the_phases_after_the_epochs(painted, qtbot) -> None:
    _, _, train = painted
    statuses: list[str] = []
    shown = train._show_training
    train._show_training = lambda update: (shown(update), statuses.append(train.status.value))
    train.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not train.running, timeout=120_000)
    closing = [status for status in statuses if not status.startswith("epoch")]
    assert any(status.startswith("re-estimating batch-norm statistics...") for status in closing)
    assert closing[-1].startswith("saving...")
    # one painted object: nothing could be held out, and the dock says how to get a check
    assert (
        "cannot be checked" in train.status.value
        and "paint at least 8 objects" in train.status.value
    )


def test_a_worse_fine_tune_is_saved_with_a_plain_warning_and_not_chosen(
    painted, monkeypatch, tiny_model
) -> None:
    from napari_unet._napari import train_widget
    from napari_unet.core.train.finetune_check import FineTuneReport

    _, segment, train = painted
    model = load_model(tiny_model)
    model.description.name = "worse-model"
    report = FineTuneReport("nuclei", "AP@0.5", "2 held-out images", 0.627, 0.572)
    model.description.metrics["fine_tuning"] = report.to_dict()
    folder = save_model(model, user_models_dir() / "worse-model")
    shown: list[str] = []
    monkeypatch.setattr(train_widget, "show_warning", shown.append)
    chosen = segment.model.value
    train._saved(folder)
    assert "nuclei 0.627, fine-tuned 0.572: WORSE than nuclei" in train.status.value
    assert len(shown) == 1 and "worse-model is worse than nuclei" in shown[0]
    assert "worse-model" in segment.model.choices and segment.model.value == chosen


def test_the_dock_is_explained_by_the_training_option_table(painted) -> None:
    import dataclasses

    from napari_unet.core.train.options import TrainOptions

    *_, widget = painted
    table = {option.name: option.metadata for option in dataclasses.fields(TrainOptions)}
    for field in ("target", "sparse", "minutes"):
        assert getattr(widget, field).tooltip.startswith(table[field]["help"]), field
    assert widget.target.choices == table["target"]["choices"]
