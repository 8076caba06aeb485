import numpy as np
import pytest

from napari_unet.core.models.network import UNet
from napari_unet.core.predict.tiling import TileGrid, plan_axis, reflect_index


def coverage(plan):
    total = np.zeros(plan.starts[-1] + plan.tile_out)
    for k, start in enumerate(plan.starts):
        total[start : start + plan.tile_out] += plan.window(k)
    return total[: plan.length]


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize(
    ("length", "max_tile", "overlap"), [(1000, 256, 64), (300, 128, 40), (77, 64, 8)]
)
def test_windows_sum_to_one_and_tiles_stay_on_the_pooling_grid(padding, length, max_tile, overlap):
    network = UNet(depth=3, base_channels=2, padding=padding)
    plan = plan_axis(network, length, max_tile, overlap, halo=overlap // 3)
    np.testing.assert_allclose(coverage(plan), 1.0, atol=1e-6)
    assert all(start % network.size_multiple == 0 for start in plan.starts)
    assert plan.starts[-1] + plan.tile_out >= length
    if len(plan.starts) > 1:
        if padding == "same":  # a valid network's tile may grow to fit its context
            assert plan.tile_in <= max_tile
        shared = [a + plan.tile_out - b for a, b in zip(plan.starts, plan.starts[1:], strict=False)]
        assert min(shared) >= overlap


def test_a_whole_image_that_fits_is_one_tile():
    network = UNet(depth=4, base_channels=2, padding="same")
    plan = plan_axis(network, 2048, 4096, overlap=112, halo=48)
    assert plan.starts == (0,) and plan.tile_in == 2048


def test_halo_pixels_get_no_weight():
    network = UNet(depth=2, base_channels=2, padding="same")
    plan = plan_axis(network, 200, 64, overlap=24, halo=10)
    assert len(plan.starts) > 1
    assert np.all(plan.window(0)[-10:] == 0) and np.all(plan.window(1)[:10] == 0)


def test_reflect_index_mirrors_without_repeating_the_border():
    np.testing.assert_array_equal(
        reflect_index(np.arange(-3, 8), 5), [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    )
    np.testing.assert_array_equal(reflect_index(np.arange(-2, 3), 1), [0, 0, 0, 0, 0])


def test_grid_tiles_cover_the_image_once_with_weights():
    network = UNet(depth=2, base_channels=2, padding="same")
    grid = TileGrid([plan_axis(network, n, 40, 12, 4) for n in (70, 90)])
    total = np.zeros((70, 90))
    for tile in grid.tiles():
        weights = grid.weights(tile)
        total[tile.target] += 1.0 if weights is None else weights
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
