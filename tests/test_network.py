import pytest
import torch
from torch import nn

from napari_unet.core.models.network import UNet, UNetConfig


def test_paper_network_has_23_convolutions_31m_weights_and_maps_572_to_388():
    with torch.device("meta"):  # shapes and counts without spending compute
        network = UNet.paper()
        output = network(torch.empty(1, 1, 572, 572))
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert len(convolutions) == 23
    assert tuple(output.shape) == (1, 2, 388, 388)
    weights = sum(p.numel() for p in network.parameters())
    assert 30.5e6 < weights < 31.5e6
    assert network.output_size(572) == 388
    assert network.context == (572 - 388) // 2


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("upsampling", ["transposed", "interpolate"])
def test_output_shape_matches_output_size(dims, padding, upsampling):
    network = UNet(
        spatial_dims=dims,
        depth=2,
        base_channels=2,
        padding=padding,
        upsampling=upsampling,
        norm="group",
        out_channels=3,
    ).eval()
    size = network.valid_input_size(44 if dims == 2 else 36)
    with torch.inference_mode():
        output = network(torch.zeros((1, 1) + (size,) * dims))
    expected = network.output_size(size)
    assert tuple(output.shape) == (1, 3) + (expected,) * dims
    if padding == "same":
        assert expected == size and size % network.size_multiple == 0
    else:
        assert (size - expected) // 2 == network.context


def test_sizes_that_do_not_fit_are_rejected_with_the_nearest_allowed():
    network = UNet(depth=4, base_channels=2, padding="valid")
    with pytest.raises(ValueError, match="nearest allowed size >= 100 is 188"):
        network.output_size(100)
    assert network.valid_input_size(100) == 188


def test_config_round_trips_and_rejects_bad_values():
    config = UNetConfig(spatial_dims=3, depth=3, padding="same", norm="batch")
    assert UNetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="padding must be"):
        UNetConfig(padding="full")
    with pytest.raises(ValueError, match="unknown U-Net config keys"):
        UNetConfig.from_dict({"depht": 3})
