import itertools
import warnings

import numpy as np
import pytest
import torch
from skimage.color import rgb2hed

from napari_unet.core import normalize
from napari_unet.core.predict.predictor import Predictor, segment
from napari_unet.core.progress import Cancelled, CancelToken
from tiny_models import make_model


def exact_overlap(model):
    """Overlap whose halo covers the whole receptive field: tiles then equal one pass."""
    network = model.network
    return 2 * network.context + network.size_multiple


def untiled(model, image):
    return Predictor(model, precision="fp32", tile_shape=4096).predict(
        image, output="probabilities"
    )


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_tiled_prediction_equals_one_pass_when_the_overlap_covers_the_receptive_field(padding, rng):
    model = make_model(padding=padding)
    image = rng.normal(size=(190, 230)).astype(np.float32)
    overlap = exact_overlap(model) if padding == "same" else 0
    tiled = Predictor(model, precision="fp32", tile_shape=96, overlap=overlap)
    assert len(tiled.plan(image.shape)) >= 4
    np.testing.assert_allclose(
        tiled.predict(image, output="probabilities"), untiled(model, image), atol=1e-5
    )


def test_default_tiles_are_seamless_for_a_model_with_constant_logits(blobs):
    model = make_model()
    head = model.network.head
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.3, -0.2]))
    predictor = Predictor(model, precision="fp32", tile_shape=24, overlap=12)
    assert len(predictor.plan(blobs.shape)) > 9
    probabilities = predictor.predict(blobs, output="probabilities")
    expected = torch.tensor([0.3, -0.2]).softmax(0).numpy()
    np.testing.assert_allclose(
        probabilities, expected[:, None, None] * np.ones((1, *blobs.shape)), atol=1e-6
    )


def test_batching_does_not_change_the_result(blobs):
    model = make_model()
    one = Predictor(model, precision="fp32", tile_shape=32, batch_size=1).predict(
        blobs, output="probabilities"
    )
    many = Predictor(model, precision="fp32", tile_shape=32, batch_size=7).predict(
        blobs, output="probabilities"
    )
    np.testing.assert_allclose(one, many, atol=1e-6)


@pytest.mark.parametrize(
    "axes", [*["".join(p) for p in itertools.permutations("TZYX")][::5], "ZYXT"]
)
def test_every_axes_order_gives_the_same_labels(axes, rng):
    model = make_model()
    canonical = rng.integers(0, 1000, (2, 3, 24, 20)).astype(np.uint16)  # T, Z, Y, X
    expected = segment(canonical, model, axes="TZYX", output="semantic")
    order = ["TZYX".index(letter) for letter in axes]
    labels = segment(canonical.transpose(order), model, axes=axes, output="semantic")
    np.testing.assert_array_equal(labels, expected.transpose(order))


@pytest.mark.parametrize(
    ("axes", "shape"),
    [
        ("CYX", (2, 24, 20)),
        ("YXC", (24, 20, 2)),
        ("TCZYX", (2, 2, 3, 24, 20)),
        ("ZCYX", (3, 2, 24, 20)),
    ],
)
def test_channel_axes_anywhere(axes, shape, rng):
    model = make_model(in_channels=2)
    image = rng.normal(size=shape).astype(np.float32)
    labels = segment(image, model, axes=axes, output="semantic")
    assert labels.shape == tuple(n for n, a in zip(shape, axes, strict=True) if a != "C")
    probabilities = segment(image, model, axes=axes, output="probabilities")
    assert probabilities.shape == (2, *labels.shape)
    channels_first = np.moveaxis(image, axes.index("C"), 0)
    rest = axes.replace("C", "")
    np.testing.assert_array_equal(
        segment(channels_first, model, axes="C" + rest, output="semantic"), labels
    )


def test_axes_are_inferred_by_the_documented_rule(rng):
    model = make_model(in_channels=3)
    rgb = rng.integers(0, 255, (24, 20, 3)).astype(np.uint8)
    np.testing.assert_array_equal(segment(rgb, model), segment(rgb, model, axes="YXC"))
    assert segment(rng.normal(size=(5, 24, 20)).astype(np.float32), make_model()).shape == (
        5,
        24,
        20,
    )


def test_a_3d_model_segments_volumes(rng):
    model = make_model(spatial_dims=3)
    volume = rng.normal(size=(2, 12, 20, 16)).astype(np.float32)
    labels = segment(volume, model, axes="TZYX", tile_shape=(8, 16, 8), overlap=4)
    assert labels.shape == volume.shape and labels.dtype == np.uint8


def test_instances_of_a_2d_model_keep_one_label_across_slices():
    stack = np.zeros((4, 32, 32), np.float32)
    stack[:, 8:20, 8:20] = 1
    predictor = Predictor(make_model(output_kind="instances"), precision="fp32")

    def interior_where_bright(x):
        bright = (x > 0.5).float()
        return torch.cat([(1 - bright) * 5, bright * 5, torch.zeros_like(x)], dim=1)

    predictor.network.forward = interior_where_bright
    labels = predictor.predict(stack, axes="ZYX", output="instances")
    assert set(np.unique(labels[:, 8:20, 8:20])) == {1} and labels.max() == 1


def test_progress_counts_every_tile_and_cancel_stops_between_batches(blobs):
    model = make_model()
    predictor = Predictor(model, tile_shape=32, batch_size=2)
    calls = []
    predictor.predict(blobs, progress=lambda done, total: calls.append((done, total)))
    total = len(predictor.plan(blobs.shape))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)

    token = CancelToken()

    def cancel_after_first(done, total):
        if done > 0:
            token.cancel()

    out = np.zeros(blobs.shape, np.uint8)
    with pytest.raises(Cancelled):
        predictor.predict(blobs, progress=cancel_after_first, cancel=token, out=out)
    assert not out.any()


class CountingArray:
    """An array-like that records every read, like a memory-mapped or zarr image."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, index):
        block = self.data[index]
        self.reads.append(block.size)
        return block


def test_lazy_inputs_are_read_tile_by_tile(rng, monkeypatch):
    monkeypatch.setattr(normalize, "MAX_SAMPLES", 1000)
    image = CountingArray(rng.integers(0, 4000, (3, 96, 128)).astype(np.uint16))
    predictor = Predictor(make_model(), tile_shape=48)
    labels = predictor.predict(image, axes="ZYX")
    tile_pixels = np.prod(predictor.plan((96, 128)).tile_shape)
    sample, *tiles = image.reads
    assert sample <= 4000  # normalisation statistics from a strided sample
    assert len(tiles) == 3 * len(predictor.plan((96, 128)))
    assert max(tiles) <= tile_pixels < image.data.size / 3
    np.testing.assert_array_equal(
        labels, Predictor(make_model(), tile_shape=48).predict(image.data, axes="ZYX")
    )


def test_dask_and_zarr_inputs(blobs):
    dask_array = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    model = make_model()
    expected = segment(blobs, model)
    np.testing.assert_array_equal(segment(dask_array.from_array(blobs, chunks=32), model), expected)
    stored = zarr.zeros(blobs.shape, chunks=(32, 32), dtype=blobs.dtype)
    stored[:] = blobs
    out = zarr.zeros(blobs.shape, dtype=np.uint8)
    segment(stored, model, out=out)
    np.testing.assert_array_equal(out[:], expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float16, np.float64, bool])
def test_any_numeric_dtype_and_constant_images(dtype, blobs):
    model = make_model()
    image = (blobs > 500).astype(dtype) if dtype is bool else blobs.astype(dtype)
    assert segment(image, model).shape == blobs.shape
    probabilities = segment(np.full((40, 40), 7, dtype), model, output="probabilities")
    assert np.isfinite(probabilities).all()


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]] * 8), {}, "NaN or infinite"),
        (np.full((16, 16), np.inf), {}, "NaN or infinite"),
        (np.zeros(16), {}, "shape \\(16,\\)"),
        (np.zeros((1,) * 6), {}, "accepted: YX"),
        (np.zeros((16, 16)), {"axes": "ZYX"}, "name 3 dims"),
        (np.zeros((4, 16, 16)), {"axes": "YXY"}, "repeat a letter"),
        (np.zeros((4, 16, 16)), {"axes": "ZCX"}, "lack Y or X"),
        (np.zeros((4, 16, 16)), {"axes": "EYX"}, "letters other than"),
        (np.zeros((16, 16, 4)), {"axes": "YXZ", "output": "outlines"}, "output must be one of"),
        (
            np.zeros((3, 16, 16)),
            {"axes": "CYX", "model": make_model(in_channels=2)},
            "expects 2 channel.*pass channel=N",
        ),
        (np.zeros((16, 16)), {"channel": 0}, "no C axis"),
        (np.zeros((0, 16)), {}, "empty"),
        (np.array([["a"]]), {}, "dtype"),
        (np.zeros((16, 16)), {"tile_shape": 0}, "tile_shape/--tile must be at least 1"),
        (np.zeros((16, 16)), {"overlap": (1, 2, 3)}, "overlap/--overlap takes one number or 2"),
        (np.zeros((16, 16)), {"batch_size": 0}, "batch_size/--batch-size must be at least 1"),
        (np.zeros((16, 16)), {"device": "cuda:7"}, "not available"),
        (np.zeros((16, 16)), {"precision": "fp8"}, "precision must be"),
        (np.zeros((16, 16)), {"out": np.zeros((8, 8))}, "out has shape"),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(image, kwargs, message):
    kwargs = {"model": make_model(), **kwargs}
    with pytest.raises(ValueError, match=message):
        segment(image, **kwargs)


def test_colour_goes_to_a_gray_model_as_the_channel_mean_and_gray_is_repeated(rng):
    rgb = rng.integers(0, 255, (24, 20, 3)).astype(np.uint8)
    gray_model, colour_model = make_model(), make_model(in_channels=3)
    gray = rgb.mean(axis=-1)
    np.testing.assert_array_equal(segment(rgb, gray_model), segment(gray, gray_model))
    repeated = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_array_equal(
        segment(gray, colour_model), segment(repeated, colour_model, axes="YXC")
    )


def test_a_hematoxylin_model_sees_the_stain_of_colour_tiles_and_gray_as_it_is(rng):
    """Stained tissue goes in as its hematoxylin density, the same in every tile."""
    stained = rng.integers(0, 255, (70, 90, 3)).astype(np.uint8)
    model = make_model()
    model.description.normalization["rgb"] = "hematoxylin"
    density = rgb2hed(stained)[..., 0]
    tiled = Predictor(model, precision="fp32", tile_shape=32, overlap=exact_overlap(model))
    np.testing.assert_allclose(
        tiled.predict(stained, output="probabilities"), untiled(model, density), atol=1e-5
    )
    assert not np.allclose(untiled(model, stained), untiled(model, stained.mean(axis=-1)))
    gray = stained[..., 0]
    np.testing.assert_array_equal(segment(gray, model), segment(gray, make_model()))


def test_hematoxylin_input_rejects_floats_beyond_0_to_1(rng):
    model = make_model()
    model.description.normalization["rgb"] = "hematoxylin"
    with pytest.raises(ValueError, match="floats in 0-1"):
        segment(rng.uniform(0, 255, (24, 20, 3)), model)


def test_a_3d_model_needs_a_z_axis():
    with pytest.raises(ValueError, match="is 3D but the image"):
        segment(np.zeros((16, 16)), make_model(spatial_dims=3))


def test_out_of_memory_halves_the_batch_then_the_tile_for_this_call_only(blobs):
    model = make_model()
    overlap = exact_overlap(model)
    expected = untiled(model, blobs)
    predictor = Predictor(model, precision="fp32", overlap=overlap, batch_size=4)
    real_forward = predictor.network.forward

    def forward_with_little_memory(x):
        if x.shape[0] > 1 or x.shape[2] * x.shape[3] > 96 * 96:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(x)

    predictor.network.forward = forward_with_little_memory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predictor.predict(np.tile(blobs, (2, 2)), output="probabilities")
    messages = " ".join(str(w.message) for w in caught)
    assert "retrying with smaller tiles" in messages
    assert predictor.batch_size == 4  # the caller's settings are left alone
    np.testing.assert_allclose(result, untiled(model, np.tile(blobs, (2, 2))), atol=1e-5)
    assert expected.shape == (2, *blobs.shape)
