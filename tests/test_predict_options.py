"""PredictOptions: every prediction option checked once, and the front ends built from it."""

import dataclasses
import json
import re

import numpy as np
import pytest

from napari_unet.cli import build_parser
from napari_unet.core.io.omezarr import read_ome_zarr
from napari_unet.core.models.registry import save_model
from napari_unet.core.predict.options import PredictOptions, option_fields, with_options
from napari_unet.core.provenance import provenance_record, sidecar_path
from tiny_models import make_model


def test_options_are_frozen_and_normalised_once():
    options = PredictOptions(tile_shape=512.0, block_shape=64, halo=(1, 8, 8), memory_limit="1GB")
    assert options.tile_shape == 512 and isinstance(options.tile_shape, int)
    assert options.block_shape == (64, 64, 64) and options.halo == (1, 8, 8)
    assert options.memory_limit == 2**30
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.tile_shape = 256  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"output": "outlines"}, "output/--output must be one of"),
        ({"precision": "fp8"}, "precision/--precision must be one of"),
        ({"device": ""}, "device/--device"),
        ({"channel": -1}, "channel/--channel"),
        ({"diameter": float("nan")}, "diameter/--diameter"),
        ({"tile_shape": 0}, "tile_shape/--tile must be at least 1"),
        ({"overlap": 1.5}, "overlap/--overlap takes whole numbers"),
        ({"batch_size": (2, 2)}, "batch_size/--batch-size takes one whole number"),
        ({"memory_limit": "lots"}, "memory_limit/--memory"),
        ({"block_shape": 8}, "blocks must be at least 16"),
        ({"halo": (1, 2)}, "halo/--halo takes one number or 3"),
    ],
)
def test_each_bad_value_is_refused_naming_the_option_as_api_and_cli_spell_it(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PredictOptions(**values)


def test_a_record_round_trips_through_json():
    options = PredictOptions(output="semantic", tile_shape=(64, 128), memory_limit=2**31)
    again = PredictOptions.from_dict(json.loads(json.dumps(options.as_dict())))
    assert again == options
    assert with_options(options, {"device": "cpu"}).tile_shape == (64, 128)
    with pytest.raises(ValueError, match="unknown prediction options: tiles"):
        PredictOptions.from_dict({"tiles": 64})


def test_the_cli_flags_are_the_option_table():
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    by_dest = {action.dest: action for action in predict._actions}
    for option in option_fields():
        action = by_dest[option.name]
        assert option.metadata["flag"] in action.option_strings
        assert action.help == option.metadata["help"]
        assert action.default is None  # a flag left out keeps the option's own default


def test_an_ome_zarr_output_keeps_its_provenance_in_its_attributes(tmp_path):
    import zarr

    from napari_unet.cli import main
    from napari_unet.core.io.images import write_image

    save_model(make_model(), tmp_path / "tiny")
    source = tmp_path / "cells.tif"
    write_image(source, np.random.default_rng(0).random((48, 48)).astype(np.float32), "YX")
    out = tmp_path / "cells.ome.zarr"
    argv = ["predict", str(source), "-o", str(out), "--model", str(tmp_path / "tiny")]
    assert main([*argv, "--tile", "48", "--quiet"]) == 0
    assert read_ome_zarr(out).shape == (48, 48)
    record = zarr.open_group(out, mode="r").attrs["napari_unet"]
    assert record["input"] == str(source) and record["axes"] == "YX"
    assert record["options"]["tile_shape"] == 48
    assert not sidecar_path(out).exists()  # a store keeps it inside, in its attributes


def test_a_provenance_record_names_model_version_and_options():
    import napari_unet

    model = make_model()
    record = provenance_record(model, PredictOptions(diameter=12), "a.tif", "YX")
    assert record["napari_unet"] == napari_unet.__version__
    assert record["model"]["name"] == model.description.name
    assert record["options"]["diameter"] == 12.0
    json.dumps(record)  # JSON as written


def test_test_time_augmentation_follows_the_card_unless_asked(monkeypatch):
    from napari_unet.core.predict.predictor import Predictor

    model = make_model()
    assert Predictor(model).settings("semantic").augmentation is None  # the card says no
    model.description.test_time_augmentation = True
    assert Predictor(model).settings("semantic").augmentation is not None
    assert Predictor(model, test_time_augmentation=False).settings("semantic").augmentation is None
    args = build_parser().parse_args(["predict", "in.tif", "-o", "out.tif", "--no-tta"])
    assert args.test_time_augmentation is False
    with pytest.raises(ValueError, match="test_time_augmentation/--tta"):
        PredictOptions(test_time_augmentation="yes")
