"""The public surface: every name documented, options by keyword, the same flags everywhere."""

import inspect

import pytest

import napari_unet
from napari_unet.cli import build_parser


@pytest.mark.parametrize("name", napari_unet.__all__)
def test_every_public_name_resolves_and_is_documented(name):
    value = getattr(napari_unet, name)
    assert inspect.getdoc(value), f"napari_unet.{name} has no docstring"


def test_augmenter_is_public_as_trains_docstring_says():
    from napari_unet.core.train.augment import Augmenter

    assert napari_unet.Augmenter is Augmenter
    assert "Augmenter" in inspect.getdoc(napari_unet.train)


def test_predictor_options_are_keywords_past_the_model():
    parameters = inspect.signature(napari_unet.Predictor).parameters
    kinds = {name: parameter.kind for name, parameter in parameters.items()}
    assert kinds.pop("model") is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert kinds.pop("changes") is inspect.Parameter.VAR_KEYWORD  # any PredictOptions field
    assert set(kinds.values()) == {inspect.Parameter.KEYWORD_ONLY}
    with pytest.raises(TypeError):
        napari_unet.Predictor("nuclei", "cpu")
    with pytest.raises(ValueError, match="unknown prediction options: tile"):
        napari_unet.Predictor("nuclei", tile=64)  # the CLI's spelling is not the API's


@pytest.mark.parametrize("flag", ["-o", "--out"])
def test_predict_and_train_name_their_output_alike(flag):
    parser = build_parser()
    predict = parser.parse_args(["predict", "in.tif", flag, "out.tif"])
    train = parser.parse_args(["train", "--images", "i", "--masks", "m", flag, "models/mine"])
    assert str(predict.target) == "out.tif" and str(train.out) == "models/mine"


def test_data_comes_first_and_the_model_second_with_one_device_default():
    for function in (napari_unet.segment, napari_unet.evaluate):
        parameters = list(inspect.signature(function).parameters.values())
        model = next(p for p in parameters if p.name == "model")
        assert parameters.index(model) in (1, 2) and parameters[0].name.startswith("image")
    assert inspect.signature(napari_unet.evaluate).parameters["device"].default == "auto"
    assert napari_unet.PredictOptions().device == "auto"
