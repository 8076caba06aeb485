import numpy as np
import pytest

from napari_unet.core.predict.predictor import Predictor
from napari_unet.core.train.datasets import LabelledImage
from tiny_models import make_model

KINDS = {
    "percentile": {"kind": "percentile", "low": 1.0, "high": 99.8},
    "percentile, dark background": {
        "kind": "percentile",
        "low": 1.0,
        "high": 99.8,
        "dark_background": True,
    },
    "minmax": {"kind": "minmax"},
    "meanstd": {"kind": "meanstd"},
    "none": {"kind": "none"},
}


def network_inputs(model, image: np.ndarray, axes: str) -> np.ndarray:
    """What the Predictor feeds the network for an image that fits one tile."""
    seen: list[np.ndarray] = []
    hook = model.network.register_forward_pre_hook(
        lambda _, inputs: seen.append(inputs[0].detach().cpu().numpy().copy())
    )
    Predictor(model, device="cpu", precision="fp32").predict(
        image, axes=axes, output="probabilities"
    )
    hook.remove()
    assert len(seen) == 1 and seen[0].shape[2:] == image.shape[:2]
    return seen[0][0]


def trained_on(model, image: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    return LabelledImage.build(image, mask, model.description, "semantic", False, False).image


@pytest.mark.parametrize("settings", KINDS.values(), ids=KINDS.keys())
def test_training_and_prediction_feed_the_network_the_same_tensor(settings, rng):
    image = rng.gamma(2.0, 300.0, (32, 48)).astype(np.uint16)
    image[4:12, 4:20] = 4000  # a mostly dark image with a bright object
    model = make_model()
    model.description.normalization = settings
    for case in (image, (image.max() - image).astype(np.uint16)):  # and a mostly bright one
        trained = trained_on(model, case)
        np.testing.assert_array_equal(trained, network_inputs(model, case, "YX"))
    if settings["kind"] == "meanstd":
        assert abs(trained.mean()) < 1e-4 and trained.std() == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize(("channels", "in_channels"), [(3, 1), (1, 3), (2, 2)])
def test_channels_are_matched_the_same_way_in_training_and_prediction(channels, in_channels, rng):
    shape = (32, 48, channels) if channels > 1 else (32, 48)
    image = rng.integers(0, 255, shape).astype(np.uint8)
    if channels > 1:
        image[..., 0] //= 4  # the channels differ in their statistics
    model = make_model(in_channels=in_channels)
    trained = trained_on(model, image)
    assert trained.shape == (in_channels, 32, 48)
    np.testing.assert_array_equal(trained, network_inputs(model, image, "YXC"[: image.ndim]))
