"""TrainOptions: training options checked once, fine-tuning defaults decided in one place."""

import dataclasses

import pytest

from napari_unet.cli import build_parser
from napari_unet.core.train.options import (
    FINE_TUNE_AVERAGE,
    FINE_TUNE_LEARNING_RATE,
    FINE_TUNE_ZOOM,
    NEW_MODEL_LEARNING_RATE,
    TrainOptions,
    with_train_options,
)


def test_a_new_network_and_a_fine_tune_get_their_own_defaults():
    new = TrainOptions().for_run(fine_tuning=False, validating=True)
    tuned = TrainOptions().for_run(fine_tuning=True, validating=True)
    assert (new.learning_rate, tuned.learning_rate) == (
        NEW_MODEL_LEARNING_RATE,
        FINE_TUNE_LEARNING_RATE,
    )
    assert (new.weight_map, new.freeze_encoder, new.average_weights) == (False, False, 0.0)
    assert (tuned.weight_map, tuned.freeze_encoder) == (True, True)
    assert tuned.average_weights == FINE_TUNE_AVERAGE
    assert new.augment.zoom_range == 1.0 and tuned.augment.zoom_range == FINE_TUNE_ZOOM
    assert tuned.calibrate and not new.calibrate  # only held-out labels re-tune thresholds
    assert not TrainOptions().for_run(fine_tuning=True, validating=False).calibrate
    assert new.epochs == 50 and TrainOptions(minutes=1).for_run(False, False).epochs > 10**5


def test_what_the_caller_says_wins_over_the_defaults():
    asked = TrainOptions(learning_rate=3e-4, weight_map=False, freeze_encoder=False, augment=False)
    run = asked.for_run(fine_tuning=True, validating=False)
    assert (run.learning_rate, run.weight_map, run.freeze_encoder, run.augment) == (
        3e-4,
        False,
        False,
        False,
    )
    assert TrainOptions(epochs=0).for_run(False, False).epochs == 0  # the starting model


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"target": "objects"}, "target must be one of"),
        ({"representation": "rays"}, "representation must be one of"),
        ({"epochs": 1.5}, "epochs must be a whole number"),
        ({"minutes": 0}, "minutes must be a positive number"),
        ({"batch_size": 0}, "batch_size must be a whole number of at least 1"),
        ({"val_fraction": 1.0}, "val_fraction must be a share from 0 to below 1"),
        ({"learning_rate": float("inf")}, "learning_rate must be a positive number"),
        ({"loss": "focal"}, "loss must be one of"),
        ({"average_weights": -0.1}, "average_weights must be a share"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"patch_shape": 0}, "patch_shape/--patch must be at least 1"),
        ({"sparse": True, "calibrate": True}, "calibrate=True needs fully labelled masks"),
    ],
)
def test_each_bad_value_is_refused_by_name(values, message):
    with pytest.raises(ValueError, match=message):
        TrainOptions(**values)


def test_options_are_frozen_and_a_typo_is_not_ignored():
    options = TrainOptions(epochs=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.epochs = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown training options: epoch"):
        with_train_options(options, {"epoch": 4})
    assert with_train_options(options, {"seed": 2}) == TrainOptions(epochs=3, seed=2)


def test_the_train_command_flags_are_the_option_table_and_old_flags_still_work():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    by_dest = {action.dest: action for action in train._actions}
    flagged = [option for option in dataclasses.fields(TrainOptions) if "flag" in option.metadata]
    assert len(flagged) >= 20
    for option in flagged:
        assert option.metadata["flag"] in by_dest[option.name].option_strings
        assert by_dest[option.name].help == option.metadata["help"]
    base = ["train", "--images", "i", "--masks", "m", "-o", "out"]
    args = build_parser().parse_args([*base, "--no-augment", "--no-calibrate", "--patch", "64"])
    assert (args.augment, args.calibrate, args.patch_shape) == (False, False, 64)
    assert build_parser().parse_args(base).augment is None  # left out: the option's default
