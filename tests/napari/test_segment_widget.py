from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
from dock_helpers import run
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer

from napari_unet._napari import live_labels, result_layers, segment_widget
from napari_unet._napari.segment_widget import LOAD_FROM_FILE, SegmentWidget, open_and_segment
from napari_unet.core.device import resolve_device
from napari_unet.core.models.registry import save_model, user_models_dir
from napari_unet.core.predict.postprocess import cell_instances, instance_labels
from napari_unet.core.predict.predictor import segment
from tiny_models import make_model

TINY_CLASSES = ("background", "interior", "boundary")


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
    count = len(np.unique(labels.data[labels.data > 0]))  # an untrained model may leave no 0
    assert widget.status.value.startswith(f"blobs ({tiny_model}): {count} objects in ")


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
    assert widget.progress.value == 0


def test_image_picker_follows_layers(viewer_and_widget, blobs) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="a")
    viewer.add_image(blobs, name="b")
    assert [layer.name for layer in widget.image.choices] == ["a", "b"]
    viewer.layers.remove("a")
    assert [layer.name for layer in widget.image.choices] == ["b"]


def test_options_the_image_cannot_take_are_refused_before_any_compute(
    viewer_and_widget, monkeypatch
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(np.zeros((2, 3, 4, 5, 6), np.uint8), name="5d")
    shown = []
    monkeypatch.setattr("napari_unet._napari.job_widget.show_info", shown.append)
    widget.run_button.clicked.emit()
    assert not widget.running
    assert widget.status.value == "cannot run: data with 5 axes is not supported; at most 4 (TZYX)"
    assert "5 axes" in shown[0]


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


def test_probabilities_are_one_layer_per_class_named_after_it(
    tiny_model, viewer_and_widget, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs", scale=(0.5, 0.5))
    widget.output.value = "probabilities"
    run(widget, qtbot)
    names = [f"blobs ({tiny_model}) {name} probability" for name in TINY_CLASSES]
    assert [layer.name for layer in viewer.layers][1:] == names
    for name in names:
        assert isinstance(viewer.layers[name], Image)
        assert viewer.layers[name].data.shape == blobs.shape
        np.testing.assert_allclose(viewer.layers[name].scale, (0.5, 0.5))
    total = sum(np.asarray(viewer.layers[name].data) for name in names)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    assert "background, interior, boundary" in widget.status.value


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
    monkeypatch.setattr(segment_widget, "ask_model_folder", lambda: "")  # the dialog cancelled
    widget.model.value = LOAD_FROM_FILE
    assert widget.model.value == folder


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


@pytest.fixture
def semantic_model(models_dir) -> str:
    save_model(make_model(output_kind="semantic"), models_dir / "tiny-semantic")
    return "tiny-semantic"


def test_only_what_the_model_can_do_is_offered(
    viewer_and_widget, tiny_model, tiny_3d_model, semantic_model, blobs, qtbot, monkeypatch
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(np.stack([blobs] * 3), name="stack")
    assert widget.output.choices == ("instances", "semantic", "probabilities")
    assert set(widget.mode.choices) == {"3D", "2D"}
    widget.model.value = semantic_model
    assert set(widget.output.choices) == {"semantic", "probabilities"}
    assert widget.output.value == "semantic"
    assert widget.foreground.native.isHidden()
    widget.model.value = tiny_3d_model
    assert widget.mode.choices == ("3D",)
    viewer.add_image(blobs, name="flat")
    widget.image.value = viewer.layers["flat"]
    monkeypatch.setattr("napari_unet._napari.job_widget.show_error", lambda _: None)
    run(widget, qtbot)  # the engine says what the model needs
    assert widget.status.value == (
        f"failed: model {tiny_3d_model!r} is 3D but the image (shape (96, 128), axes YX) "
        "has no Z axis"
    )


def test_stacks_default_to_objects_joined_in_3d_as_in_the_api(
    viewer_and_widget, tiny_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    stack = np.stack([blobs, np.roll(blobs, 3, axis=1), np.roll(blobs, 6, axis=1)])
    viewer.add_image(stack, name="stack")
    assert widget.mode.value == "3D"
    run(widget, qtbot)
    expected = segment(stack, tiny_model, device="cpu")
    np.testing.assert_array_equal(viewer.layers[f"stack ({tiny_model})"].data, expected)
    viewer.add_image(stack, name="movie", axis_labels=("t", "y", "x"))
    widget.image.value = viewer.layers["movie"]
    assert widget.mode.value == "2D"  # a T axis keeps its planes apart, as in the CLI


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_distance_model"])
def test_thresholds_relabel_the_kept_probabilities_without_the_network(
    viewer_and_widget, model_fixture, blobs, qtbot, monkeypatch, request
) -> None:
    viewer, widget = viewer_and_widget
    tiny_model = request.getfixturevalue(model_fixture)
    widget.model.reset_choices()
    widget.model.value = tiny_model
    viewer.add_image(np.tile(blobs, (2, 2)), name="blobs")
    widget.seed.value = 0.3
    run(widget, qtbot)
    layer = viewer.layers[f"blobs ({tiny_model})"]
    probabilities = widget.live.kept.probabilities
    np.testing.assert_array_equal(layer.data, instance_labels(probabilities, **widget.thresholds()))
    monkeypatch.setattr(live_labels, "segment_layer", None)  # the network must not run again
    in_viewer_thread: list[bool] = []
    relabel = live_labels.KeptProbabilities.labels

    def counted(kept, thresholds):
        in_viewer_thread.append(threading.current_thread() is threading.main_thread())
        return relabel(kept, thresholds)

    monkeypatch.setattr(live_labels.KeptProbabilities, "labels", counted)
    widget.min_size.value = 40
    widget.foreground.value = 0.6
    assert in_viewer_thread == [True, True]  # once per moved threshold, at once: no worker
    np.testing.assert_array_equal(layer.data, instance_labels(probabilities, 0.6, 0.3, 40))
    assert "re-labelled in" in widget.status.value


def test_every_field_has_a_tooltip(viewer_and_widget) -> None:
    _, widget = viewer_and_widget
    fields = [field for field in widget if field is not widget.status]
    assert all(field.tooltip for field in fields), [f.name for f in fields if not f.tooltip]


def test_one_plane_shows_a_moving_busy_bar(viewer_and_widget) -> None:
    _, widget = viewer_and_widget
    widget.show_progress(0, 1)
    assert widget.progress.max == 0  # Qt draws a moving bar
    widget.show_progress(3, 8)
    assert (widget.progress.value, widget.progress.max) == (3, 8)


def test_large_results_relabel_in_a_thread_with_the_latest_thresholds(
    viewer_and_widget, tiny_model, blobs, qtbot, monkeypatch
) -> None:
    viewer, widget = viewer_and_widget
    monkeypatch.setattr(result_layers, "LIVE_PIXELS", 0)
    viewer.add_image(blobs, name="blobs")
    widget.seed.value = 0.3
    run(widget, qtbot)
    probabilities = widget.live.kept.probabilities
    widget.foreground.value = 0.6
    assert widget.status.value.endswith("re-labelling with the new thresholds...")
    widget.min_size.value = 40  # moved while the first re-labelling runs
    qtbot.waitUntil(lambda: "re-labelled" in widget.status.value, timeout=10_000)
    qtbot.waitUntil(lambda: not widget.live.busy, timeout=10_000)
    expected = instance_labels(probabilities, 0.6, 0.3, 40)
    np.testing.assert_array_equal(viewer.layers[f"blobs ({tiny_model})"].data, expected)


def test_object_diameter_is_offered_for_sized_models_and_matches_the_api(
    viewer_and_widget, tiny_model, models_dir, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    assert widget.diameter.native.isHidden()  # the tiny model states no object size
    sized = make_model(output_kind="instances")
    sized.description.object_diameter_px = 20.0
    save_model(sized, models_dir / "tiny-sized")
    widget.model.reset_choices()
    widget.model.value = "tiny-sized"
    assert not widget.diameter.native.isHidden()
    assert "20 px" in widget.diameter.tooltip
    viewer.add_image(blobs, name="blobs")
    widget.diameter.value = 10
    run(widget, qtbot)
    expected = segment(blobs, "tiny-sized", diameter=10.0, device="cpu")
    np.testing.assert_array_equal(viewer.layers["blobs (tiny-sized)"].data, expected)


def test_membrane_models_offer_cells_as_instances_with_live_thresholds(
    viewer_and_widget, models_dir, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    membranes = make_model(output_kind="semantic")
    membranes.description.class_names = ["membrane", "interior"]
    save_model(membranes, models_dir / "tiny-membranes")
    widget.model.reset_choices()
    widget.model.value = "tiny-membranes"
    assert widget.output.choices == ("instances", "semantic", "probabilities")
    viewer.add_image(blobs, name="em")
    widget.output.value = "instances"
    run(widget, qtbot)
    probabilities = widget.live.kept.probabilities
    widget.seed.value = 0.55
    expected = cell_instances(probabilities, 0, **{**widget.thresholds(), "seed_threshold": 0.55})
    np.testing.assert_array_equal(viewer.layers["em (tiny-membranes)"].data, expected)


def test_segment_on_a_multiscale_layer_gives_lazy_multiscale_labels(
    viewer_and_widget, tiny_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    image = np.tile(blobs, (8, 8))
    viewer.add_image([image, image[::2, ::2]], multiscale=True, name="big", scale=(0.5, 0.5))
    widget.output.value = "instances"
    run(widget, qtbot)
    labels = viewer.layers[f"big ({tiny_model})"]
    assert labels.multiscale and labels.data[0].shape == image.shape
    assert not isinstance(labels.data[0], np.ndarray)  # zarr-backed, not materialised
    np.testing.assert_allclose(labels.scale, (0.5, 0.5))
    assert "objects in" in widget.status.value


def test_a_bioimageio_package_is_picked_as_a_file_and_segments(
    viewer_and_widget, tiny_model, blobs, tmp_path, monkeypatch, qtbot
) -> None:
    pytest.importorskip("bioimageio.spec")
    from napari_unet import export_bioimageio

    viewer, widget = viewer_and_widget
    package = str(export_bioimageio(tiny_model, tmp_path / "tiny.zip", sample=blobs))
    monkeypatch.setattr(segment_widget, "ask_model_folder", lambda: package)
    widget.model.value = LOAD_FROM_FILE
    assert widget.model.value == package and widget.output.value == "instances"
    viewer.add_image(blobs, name="blobs")
    run(widget, qtbot)
    labels = viewer.layers[-1]
    assert isinstance(labels, Labels) and labels.data.shape == blobs.shape


def _layer_kinds(blobs: np.ndarray) -> dict[str, dict]:
    """Image layers of every kind the widget takes: multiscale, lazy, 3D and RGB."""
    import dask.array as da

    big = np.tile(blobs, (8, 8))  # large enough for a label pyramid of several levels
    return {
        "multiscale": {"data": [big, big[::2, ::2]], "multiscale": True},
        "lazy": {"data": da.from_array(np.tile(blobs, (2, 2)), chunks=64)},
        "volume": {"data": np.stack([blobs, np.roll(blobs, 4, axis=1)])},
        "rgb": {"data": np.stack([blobs, blobs // 2, blobs // 3], axis=-1), "rgb": True},
    }


@pytest.mark.parametrize("kind", ["multiscale", "lazy", "volume", "rgb"])
def test_running_again_on_every_layer_kind_updates_the_same_layer(
    viewer_and_widget, tiny_model, blobs, qtbot, kind
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(name=kind, **_layer_kinds(blobs)[kind])
    run(widget, qtbot)
    first, first_status = viewer.layers[f"{kind} ({tiny_model})"], widget.status.value
    first_count = int(first_status.split(": ")[1].split()[0])
    run(widget, qtbot)
    assert [layer.name for layer in viewer.layers] == [kind, f"{kind} ({tiny_model})"]
    assert viewer.layers[f"{kind} ({tiny_model})"] is first
    assert widget.status.value.startswith(f"{kind} ({tiny_model}): {first_count} objects in ")
    assert first.multiscale == (kind == "multiscale")


def test_semantic_classes_of_a_multiscale_layer_are_counted_lazily_on_every_run(
    viewer_and_widget, tiny_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(name="multiscale", **_layer_kinds(blobs)["multiscale"])
    widget.output.value = "semantic"
    statuses = [_semantic_status(widget, qtbot) for _ in range(2)]
    classes = viewer.layers[f"multiscale ({tiny_model}) classes"]
    assert classes.multiscale and not isinstance(classes.data[0], np.ndarray)
    found = [TINY_CLASSES[value] for value in np.unique(np.asarray(classes.data[0]))]
    assert statuses[0] == statuses[1] == f"classes found: {', '.join(found)}"


def _semantic_status(widget: SegmentWidget, qtbot) -> str:
    """Run, and return the status between the layer name and the time."""
    run(widget, qtbot)
    return widget.status.value.split(": ", 1)[1].rsplit(", in ", 1)[0]


def test_a_result_napari_cannot_put_in_the_layer_replaces_it_in_place(
    viewer_and_widget, tiny_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(name="multiscale", **_layer_kinds(blobs)["multiscale"])
    viewer.add_image(blobs, name="above")
    widget.image.value = viewer.layers["multiscale"]
    widget.current_slice.value = True  # a preview: one plain array
    run(widget, qtbot)
    preview = viewer.layers[f"multiscale ({tiny_model})"]
    assert not preview.multiscale
    preview.opacity = 0.3
    viewer.layers.move(viewer.layers.index(preview), 1)  # under "above"
    widget.current_slice.value = False  # the whole image: a label pyramid
    run(widget, qtbot)
    result = viewer.layers[f"multiscale ({tiny_model})"]
    assert result.multiscale and result.opacity == pytest.approx(0.3)
    assert [layer.name for layer in viewer.layers] == [
        "multiscale",
        f"multiscale ({tiny_model})",
        "above",
    ]


def test_a_failure_in_showing_the_result_ends_the_job_with_its_reason(
    viewer_and_widget, blobs, qtbot, monkeypatch
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs")

    def broken(_):
        raise RuntimeError("the layer cannot take it")

    monkeypatch.setattr(widget, "show_layer", broken)
    monkeypatch.setattr("napari_unet._napari.job_widget.show_error", lambda _: None)
    run(widget, qtbot)
    assert widget.status.value == "failed: the layer cannot take it"
    assert widget.run_button.text == "Run" and widget.progress.max == 1
    assert [layer.name for layer in viewer.layers] == ["blobs"]


def test_each_output_kind_has_its_own_layer(viewer_and_widget, tiny_model, blobs, qtbot) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="blobs")
    run(widget, qtbot)
    instances = np.asarray(viewer.layers[f"blobs ({tiny_model})"].data).copy()
    widget.output.value = "semantic"
    run(widget, qtbot)
    assert [layer.name for layer in viewer.layers] == [
        "blobs",
        f"blobs ({tiny_model})",
        f"blobs ({tiny_model}) classes",
    ]
    np.testing.assert_array_equal(viewer.layers[f"blobs ({tiny_model})"].data, instances)
    classes = np.asarray(viewer.layers[f"blobs ({tiny_model}) classes"].data)
    assert classes.max() <= 2 and widget.status.value.startswith(
        f"blobs ({tiny_model}) classes: classes found: "
    )


@pytest.fixture
def membrane_model(models_dir) -> str:
    """A tiny two-class model whose class 0 is membrane, as em-membranes."""
    membranes = make_model(output_kind="semantic")
    membranes.description.class_names = ["membrane", "interior"]
    save_model(membranes, models_dir / "tiny-membranes")
    return "tiny-membranes"


def test_semantic_classes_are_drawn_unless_background(
    viewer_and_widget, tiny_model, membrane_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="em")
    widget.model.reset_choices()
    for model in (membrane_model, tiny_model):
        widget.model.value = model
        widget.output.value = "semantic"
        run(widget, qtbot)
    membranes = viewer.layers[f"em ({membrane_model}) classes"]
    assert membranes.colormap.map(np.array([0, 1]))[:, 3].tolist() == [1, 1]
    assert (membranes.colormap.map(np.asarray(membranes.data))[..., 3] == 1).all()
    assert list(membranes.features["class"]) == ["membrane", "interior"]
    boundaries = viewer.layers[f"em ({tiny_model}) classes"]
    assert boundaries.colormap.map(np.array([0, 1, 2]))[:, 3].tolist() == [0, 1, 1]
    assert boundaries.colormap.background_value == 0


def test_a_distance_output_is_named_a_distance(
    viewer_and_widget, tiny_distance_model, blobs, qtbot
) -> None:
    viewer, widget = viewer_and_widget
    widget.model.reset_choices()
    widget.model.value = tiny_distance_model
    viewer.add_image(blobs, name="blobs")
    widget.output.value = "probabilities"
    run(widget, qtbot)
    base = f"blobs ({tiny_distance_model})"
    names = [f"{base} {name} probability" for name in TINY_CLASSES]
    assert [layer.name for layer in viewer.layers][1:] == [*names, f"{base} distance to outline"]
    assert [layer.visible for layer in viewer.layers][1:] == [False, True, True, True]
    assert widget.status.value.startswith(
        f"{base} probabilities: one probability layer per class (background, interior, boundary)"
        " and the distance to the outline, in "
    )


@pytest.mark.parametrize(("sample", "model"), [("em", "em-membranes"), ("nuclei", "nuclei")])
def test_a_sample_picks_the_model_meant_for_it(make_napari_viewer, sample, model) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-segment", "Segment")
    widget.model.value = "em-membranes" if model == "nuclei" else "nuclei"
    viewer.open_sample("napari-unet-segment", sample)
    assert widget.image.value.name == sample
    assert widget.model.value == model


def test_an_image_at_the_pixel_size_of_a_model_picks_it(
    viewer_and_widget, models_dir, blobs
) -> None:
    viewer, widget = viewer_and_widget
    viewer.add_image(blobs, name="nm", scale=(5.0, 5.0), units=("nm", "nm"))
    viewer.add_image(blobs, name="um", scale=(0.3, 0.3), units=("um", "um"))
    widget.image.value = viewer.layers["nm"]  # em-membranes' card: 4 nm pixels
    assert widget.model.value == "em-membranes"
    widget.model.value = "nuclei"
    widget.image.value = viewer.layers["um"]  # no model was trained at 0.3 um
    assert widget.model.value == "nuclei"
    own = make_model(output_kind="semantic")
    own.description.pixel_size_um = 0.006  # e.g. a fine-tuned EM model
    save_model(own, models_dir / "my-em")
    widget.model.reset_choices()
    widget.model.value = "my-em"
    widget.image.value = viewer.layers["nm"]
    assert widget.model.value == "my-em"  # trained near 5 nm too: the user's choice stays
