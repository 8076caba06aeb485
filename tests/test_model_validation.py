"""Model folders are untrusted: bad cards fail fast and briefly, and never hide other models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from napari_unet._napari.model_choices import saved_models
from napari_unet.cli import main
from napari_unet.core.models.registry import (
    CARD_FILE,
    USER_MODELS_ENV,
    describe_models,
    list_models,
    load_model,
    save_model,
)
from tiny_models import make_model


@pytest.fixture
def folder(tmp_path):
    """A saved tiny instance model whose card the tests then spoil."""
    return save_model(make_model(output_kind="instances"), tmp_path / "tiny")


def spoil(folder, change) -> None:
    card = json.loads((folder / CARD_FILE).read_text())
    change(card)
    (folder / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["architecture"].update(depth="2"), "architecture.depth"),
        (lambda c: c["architecture"].update(depth=40), "architecture.depth"),
        (lambda c: c["architecture"].update(base_channels=10**9), "architecture.base_channels"),
        (lambda c: c["architecture"].update(in_channels=1.5), "architecture.in_channels"),
        (lambda c: c["architecture"].update(out_channels=True), "architecture.out_channels"),
        (lambda c: c["architecture"].update(norm="layer"), "architecture.norm"),
        (lambda c: c.pop("architecture"), "'architecture'"),
        (lambda c: c["normalization"].update(low=math.nan), "normalization.low"),
        (lambda c: c["normalization"].update(high=1e9), "normalization.low and .high"),
        (lambda c: c["normalization"].update(gamma=2), "unknown keys ['gamma']"),
        (lambda c: c["normalization"].update(kind="zscore"), "normalization.kind"),
        (lambda c: c["normalization"].update(rgb="eosin"), "normalization.rgb"),
        (lambda c: c["postprocess"].update(seed_threshold=7), "postprocess.seed_threshold"),
        (lambda c: c["postprocess"].update(min_size=-3), "postprocess.min_size"),
        (lambda c: c["postprocess"].update(evil="x"), "unknown keys ['evil']"),
        (lambda c: c.update(pixel_size_um=-1), "'pixel_size_um'"),
        (lambda c: c.update(class_names="abc"), "'class_names'"),
        (lambda c: c.update(format_version="1"), "format_version"),
        (lambda c: c.update(description=["a"]), "'description'"),
    ],
)
def test_a_bad_card_fails_at_once_with_a_short_message_naming_the_field(
    folder, change, named, monkeypatch
):
    """Refused from the card alone: no network is built (10**9 channels) and no weights read."""
    spoil(folder, change)

    def no_network(*args, **kwargs):
        pytest.fail("a network was built from a bad card")

    monkeypatch.setattr(torch.nn.Module, "__init__", no_network)
    with pytest.raises(ValueError, match="is invalid") as info:
        load_model(folder)
    message = str(info.value)
    assert named in message and len(message) < 400 and "\n" not in message


def test_weights_of_another_architecture_are_named_briefly(folder):
    spoil(folder, lambda card: card["architecture"].update(base_channels=8))
    with pytest.raises(
        ValueError, match=r"55 of another shape \(e\.g\. .*: file \(8, 16, 3, 3\), card \(16, 32"
    ) as info:
        load_model(folder)
    assert len(str(info.value)) < 400


def test_weights_for_a_deeper_network_are_counted_not_dumped(folder):
    spoil(folder, lambda card: card["architecture"].update(depth=1))
    with pytest.raises(ValueError, match=r"unexpected \(.*more\)") as info:
        load_model(folder)
    assert len(str(info.value)) < 400


def test_a_card_that_is_not_json_or_far_too_big_is_a_short_error(folder):
    (folder / CARD_FILE).write_text("{" + " " * 2**21 + "}")
    with pytest.raises(ValueError, match="over 1 MB, not a card"):
        load_model(folder)
    (folder / CARD_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"model\.json is not readable JSON"):
        load_model(folder)


def test_weights_holding_nan_are_refused(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.network.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"1 weight tensors hold NaN .*\(head\.weight\)"):
        load_model(save_model(model, tmp_path / "nan"))


def test_a_corrupt_weight_file_is_a_short_error(folder):
    (folder / "weights.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(folder)


def test_one_broken_user_model_warns_and_hides_no_other(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(USER_MODELS_ENV, str(tmp_path))
    for name in ("good", "broken"):
        model = make_model()
        model.description.name = name
        save_model(model, tmp_path / name)
    spoil(tmp_path / "broken", lambda card: card["architecture"].update(depth=-1))

    with pytest.warns(UserWarning, match=r"model 'broken' .* architecture\.depth"):
        names = list_models()
    assert names[-1] == "good" and "broken" not in names and "nuclei" in names
    with pytest.warns(UserWarning, match="'broken'"):
        assert "good" in dict(describe_models())
    with pytest.warns(UserWarning, match="'broken'"):
        assert ("good", "good") in saved_models()
    assert main(["models"]) == 0
    listed, warned = capsys.readouterr()
    assert "good\tsemantic" in listed and "nuclei" in listed and "broken" not in listed
    assert warned.startswith("napari-unet: warning: skipping a broken model: model 'broken'")
