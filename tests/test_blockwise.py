import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from label_helpers import matched_share
from napari_unet.core.predict.blocks import AxisGeometry, BlockGrid, choose_core_shape
from napari_unet.core.predict.predictor import Predictor
from napari_unet.core.progress import Cancelled, CancelToken
from tiny_models import make_model

WHOLE = 4096


def bumps(rng, shape, count, radius=(4, 9)):
    """Touching round objects whose brightness peaks at their centres (values 0..1)."""
    image = np.zeros(shape, np.float32)
    grids = np.indices(shape)
    for _ in range(count):
        centre = [rng.uniform(0, n) for n in shape]
        r = rng.uniform(*radius)
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)))
        image = np.maximum(image, np.clip(1 - (distance / r) ** 2, 0, None))
    return image


def bump_predictor(spatial_dims=2, **settings):
    """A predictor whose 'network' calls bright centres interior: a stand-in for a trained one."""
    model = make_model(output_kind="instances", spatial_dims=spatial_dims)
    model.description.normalization = {"kind": "none"}
    predictor = Predictor(model, precision="fp32", **settings)

    def interior_at_peaks(x):
        return torch.cat([12 * (0.1 - x), 12 * (x - 0.35), torch.zeros_like(x)], dim=1)

    predictor.network.forward = interior_at_peaks
    return predictor


@pytest.mark.parametrize(("padding", "depth"), [("same", 4), ("valid", 2)])
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_blocks_give_the_classes_of_one_pass(padding, depth, precision, rng):
    """Windows reach the full receptive field, so blocks only differ by float rounding."""
    model = make_model(padding=padding, depth=depth)
    image = rng.normal(size=(150, 170)).astype(np.float32)
    settings = {"tile_shape": WHOLE, "precision": precision}
    whole = Predictor(model, block_shape=WHOLE, **settings).predict(image, output="probabilities")
    blocked = Predictor(model, block_shape=(1, 48, 64), **settings)
    assert len(blocked.predict(image, output="probabilities")) == 2
    np.testing.assert_allclose(blocked.predict(image, output="probabilities"), whole, atol=2e-3)
    decided = np.abs(whole[1] - whole[0]) > 5e-3
    classes = blocked.predict(image, output="semantic")
    np.testing.assert_array_equal(classes[decided], (whole[1] > whole[0])[decided])


def test_objects_cut_by_block_seams_are_joined_and_numbered_once(rng):
    image = bumps(rng, (160, 190), 70)
    whole = bump_predictor(block_shape=WHOLE).predict(image, output="instances")
    blocked = bump_predictor(block_shape=(1, 40, 56), halo=24).predict(image, output="instances")
    assert whole.max() > 40
    share, one_to_one = matched_share(whole, blocked)
    assert share >= 0.99 and one_to_one
    assert set(np.unique(blocked)) == set(range(blocked.max() + 1))  # 1..N, no gaps
    crossing = [
        label
        for label, box in enumerate(ndi.find_objects(blocked), start=1)
        if box and box[0].start < 40 < box[0].stop
    ]
    assert crossing  # some objects do cross a seam, and each kept one label


def test_a_stack_joins_objects_in_3d_across_blocks_in_z_and_xy(rng):
    stack = bumps(rng, (12, 64, 72), 25, radius=(4, 7))
    whole = bump_predictor(block_shape=WHOLE).predict(stack, axes="ZYX", output="instances")
    blocked = bump_predictor(block_shape=(4, 32, 40), halo=(2, 16, 16)).predict(
        stack, axes="ZYX", output="instances"
    )
    share, one_to_one = matched_share(whole, blocked)
    assert share >= 0.95 and one_to_one


def test_time_points_are_numbered_separately(rng):
    frames = np.stack([bumps(rng, (48, 48), 6), bumps(rng, (48, 48), 6)])
    labels = bump_predictor(block_shape=(1, 24, 24), halo=12).predict(
        frames, axes="TYX", output="instances"
    )
    assert labels[0].max() >= 1 and labels[1].max() >= 1
    assert set(np.unique(labels[1])) == set(range(labels[1].max() + 1))


def test_narrow_out_gets_final_labels_and_is_refused_when_too_narrow(rng):
    image = bumps(rng, (96, 96), 40, radius=(3, 5))
    predictor = bump_predictor(block_shape=(1, 48, 48), halo=16)
    expected = predictor.predict(image, output="instances")
    out = np.zeros(image.shape, np.uint16)
    predictor.predict(image, output="instances", out=out)
    np.testing.assert_array_equal(out, expected)
    assert expected.max() > 8
    tiny = np.zeros(image.shape, np.uint8)
    with pytest.raises(OverflowError, match="cannot hold"):
        many = np.tile(image, (5, 5))
        predictor.predict(many, output="instances", out=np.zeros(many.shape, np.uint8))
    for dtype in (bool, np.float32):
        with pytest.raises(ValueError, match="cannot hold labels"):
            predictor.predict(image, output="instances", out=tiny.astype(dtype))
    with pytest.raises(ValueError, match="masked array"):
        predictor.predict(np.ma.masked_less(image, 0.1), output="instances")


def test_zarr_out_is_written_in_whole_chunks(rng):
    zarr = pytest.importorskip("zarr")
    image = bumps(rng, (100, 120), 30)
    out = zarr.zeros((100, 120), chunks=(32, 32), dtype=np.uint32)
    predictor = bump_predictor(memory_limit="64GB")
    predictor.predict(image, output="instances", out=out)
    np.testing.assert_array_equal(
        out[:], bump_predictor(block_shape=WHOLE).predict(image, output="instances")
    )


def test_cancel_stops_within_a_block_and_writes_nothing(rng):
    image = rng.normal(size=(96, 96)).astype(np.float32)
    token = CancelToken()
    out = np.zeros(image.shape, np.uint8)
    predictor = Predictor(make_model(), tile_shape=32, block_shape=(1, 96, 96))

    def cancel_after_first(done, total):
        if done:
            token.cancel()

    with pytest.raises(Cancelled):
        predictor.predict(image, out=out, progress=cancel_after_first, cancel=token)
    assert not out.any()


def test_out_of_memory_ladder_ends_with_a_memory_error_and_leaves_settings_alone(rng):
    predictor = Predictor(make_model(), batch_size=3)

    def always_out_of_memory(x):
        raise torch.OutOfMemoryError("simulated")

    predictor.network.forward = always_out_of_memory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MemoryError, match="even with tiles of"):
            predictor.predict(rng.normal(size=(200, 200)).astype(np.float32))
    assert predictor.batch_size == 3 and predictor.tile_shape is None


def test_block_windows_start_on_the_pooling_grid_and_reach_the_full_context():
    geometry = [AxisGeometry(0, 1, 0), AxisGeometry(92, 16, 10), AxisGeometry(92, 16, 10)]
    grid = BlockGrid((1, 1000, 300), (1, 256, 300), geometry)
    for block in grid.blocks():
        for axis in (1, 2):
            window, region, core = block.window[axis], block.region[axis], block.core[axis]
            assert window.start % 16 == 0
            assert window.start <= region.start and window.stop >= region.stop
            assert window.start == 0 or core.start - window.start >= 92
            assert window.stop == grid.shape[axis] or window.stop - core.stop >= 92
    assert len(grid.seams()) == 3


def test_cores_shrink_until_the_window_fits_and_follow_the_chunks():
    geometry = [AxisGeometry(0, 1, 0), AxisGeometry(96, 16, 0), AxisGeometry(96, 16, 0)]
    core = choose_core_shape(
        (1, 8192, 8192), geometry, 10**9, 2240**2, (False, True, True), 2048, None, (1, 512, 512)
    )
    assert core == (1, 2048, 2048)
    small = choose_core_shape(
        (1, 8192, 8192), geometry, 10**9, 1200**2, (False, True, True), 2048, None, (1, 512, 512)
    )
    assert small[1] % 512 == 0 and (small[1] + 192) ** 2 <= 1200**2 + 10**6


def test_slices_shared_by_blocks_along_z_go_through_the_network_once(rng):
    stack = bumps(rng, (12, 64, 72), 25, radius=(4, 7))
    whole = bump_predictor(block_shape=WHOLE).predict(stack, axes="ZYX", output="instances")
    predictor = bump_predictor(block_shape=(4, 64, 72), halo=(2, 16, 16))
    bump = predictor.network.forward
    seen = []

    def counting(x):
        seen.append(x.shape[0])
        return bump(x)

    predictor.network.forward = counting
    calls = []
    labels = predictor.predict(
        stack, axes="ZYX", output="instances", progress=lambda done, total: calls.append(done)
    )
    assert sum(seen) == 12  # windows [0, 6), [2, 10), [6, 12): 20 slices without reuse
    assert calls[-1] == 20  # progress still counts every slice of every window
    share, one_to_one = matched_share(whole, labels)
    assert share >= 0.95 and one_to_one


def test_a_stack_of_a_2d_model_is_cut_along_z_first():
    geometry = [AxisGeometry(0, 1, 2), AxisGeometry(92, 16, 32), AxisGeometry(92, 16, 32)]
    core = choose_core_shape(
        (64, 1024, 1024), geometry, 18 * 2**20, 4 * 2**20, (False, True, True), None, 2**24
    )
    assert core[1:] == (1024, 1024) and core[0] < 64
    assert (core[0] + 4) * 1024 * 1024 <= 18 * 2**20
