"""Widening a trained U-Net keeps its outputs, so fine-tuning starts from what it learned."""

from __future__ import annotations

import pytest
import torch

from napari_unet.core.models.widen import widen
from tiny_models import make_model


def _logits(model, image: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.network.eval()(image)


@pytest.mark.parametrize("base_channels", [6, 8])
def test_widened_network_computes_the_same_logits(rng, base_channels):
    model = make_model(depth=2, output_kind="instances")
    wide = widen(model, base_channels, seed=3)
    assert wide.description.architecture.base_channels == base_channels
    assert wide.description.output_kind == "instances"
    size = sum(p.numel() for p in wide.network.parameters())
    assert size > 1.5 * sum(p.numel() for p in model.network.parameters())

    image = torch.from_numpy(rng.random((2, 1, 32, 32), dtype="float32"))
    torch.testing.assert_close(_logits(wide, image), _logits(model, image), rtol=1e-4, atol=1e-5)


def test_noise_breaks_the_symmetry_of_copied_channels_but_only_slightly(rng):
    model = make_model(depth=2)
    image = torch.from_numpy(rng.random((1, 1, 32, 32), dtype="float32"))
    expected = _logits(model, image)
    noisy = _logits(widen(model, 8, noise=0.01), image)
    difference = (noisy - expected).abs().max()
    assert 0 < difference < 0.1 * expected.abs().max()


def test_only_a_wider_batch_norm_network_is_accepted():
    with pytest.raises(ValueError, match="exceed"):
        widen(make_model(), 4)
    with pytest.raises(ValueError, match="batch-norm"):
        widen(make_model(norm="group"), 8)
