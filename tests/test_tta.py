"""Test-time augmentation: outputs averaged over the eight symmetries of the YX plane."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet.core.models.network import UNetConfig
from napari_unet.core.models.registry import ModelDescription
from napari_unet.core.predict.inference import (
    SymmetryAveraging,
    forward,
    symmetry_averaging,
)
from napari_unet.core.predict.predictor import Predictor
from tiny_models import make_model

pytestmark = pytest.mark.usefixtures("one_thread")


def equivariant_outputs(x: torch.Tensor) -> torch.Tensor:
    """Class logits that are pixelwise functions of ``x``, then the gradient of ``x`` (Y, X).

    Each symmetry of the plane maps this function's output onto the output of the mapped
    input (the gradient's components flipped in sign or swapped), so averaging over the eight
    must give back the output itself.
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gradient_y = padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]
    gradient_x = padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]
    return torch.cat([x, 2 * x**2 - 1, -x, gradient_y, gradient_x], dim=1)


def test_averaging_an_equivariant_function_gives_the_function():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, 12, 12)).astype(np.float32))
    augmentation = SymmetryAveraging(classes=3, regression="flows")
    averaged = augmentation.average(x, equivariant_outputs)
    plain = equivariant_outputs(x)
    torch.testing.assert_close(averaged[:, :3].softmax(1), plain[:, :3].softmax(1))
    torch.testing.assert_close(averaged[:, 3:], plain[:, 3:])


def test_averaging_a_distance_returns_the_logit_of_the_mean_sigmoid():
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 1, 8, 8)).astype(np.float32))
    augmentation = SymmetryAveraging(classes=2, regression="distance")
    outputs = augmentation.average(x, lambda t: torch.cat([t, -t, 3 * t], dim=1))
    torch.testing.assert_close(outputs[:, 2], 3 * x[:, 0], rtol=1e-4, atol=1e-4)


def test_averaging_a_direction_dependent_function_makes_it_symmetric():
    """A network that sees the image's left as special: averaging removes the preference."""
    x = torch.zeros(1, 1, 8, 8)
    ramp = torch.arange(8.0).expand(1, 1, 8, 8)
    outputs = SymmetryAveraging(classes=2).average(x, lambda t: torch.cat([ramp, -ramp], 1))
    probabilities = outputs.softmax(1)[0, 0]
    torch.testing.assert_close(probabilities, probabilities.flip(-1))
    torch.testing.assert_close(probabilities, probabilities.transpose(-1, -2))


@pytest.mark.parametrize("output_kind", ["semantic", "distance"])
def test_a_real_model_keeps_its_output_shape_and_dtype(output_kind):
    model = make_model(output_kind=output_kind)
    predictor = Predictor(model, device="cpu", precision="fp32")
    settings = predictor.settings("probabilities")
    tiles = np.random.default_rng(2).normal(size=(3, 1, 32, 48)).astype(np.float32)
    plain = forward(tiles, settings)
    settings.augmentation = symmetry_averaging(model.description, True)
    averaged = forward(tiles, settings)
    assert averaged.shape == plain.shape and averaged.dtype == plain.dtype == np.float32
    assert np.isfinite(averaged).all()
    assert not np.allclose(averaged, plain)  # an untrained network is not symmetric


def test_the_card_decides_which_channels_are_averaged_how():
    flows = ModelDescription(
        name="f",
        architecture=UNetConfig(out_channels=5),
        output_kind="instances",
        class_names=["background", "interior", "boundary", "flow_y", "flow_x"],
    )
    assert symmetry_averaging(flows, True) == SymmetryAveraging(3, "flows")
    semantic = make_model().description
    assert symmetry_averaging(semantic, True) == SymmetryAveraging(2, None)
    assert symmetry_averaging(semantic, False) is None
