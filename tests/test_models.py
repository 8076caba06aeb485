"""Model files: weights round-trip, half-precision storage, and the guards around saving."""

from __future__ import annotations

import pytest
import torch

from napari_unet.core.models.registry import (
    WEIGHTS_FILE,
    list_models,
    load_model,
    resolve_model_path,
    save_model,
)
from tiny_models import make_model


def _outputs(model, image: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.network.eval()(image)


def test_weights_round_trip_exactly(tmp_path):
    model = make_model()
    loaded = load_model(save_model(model, tmp_path / "tiny"))
    for key, value in model.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key


def test_half_precision_halves_the_file_and_keeps_the_outputs(tmp_path, rng):
    model = make_model()
    full = save_model(model, tmp_path / "full")
    half = save_model(model, tmp_path / "half", half_precision=True)
    full_size, half_size = ((f / WEIGHTS_FILE).stat().st_size for f in (full, half))
    assert half_size < 0.6 * full_size

    loaded = load_model(half)
    state = loaded.network.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters and all(state[k].dtype == torch.int64 for k in counters)

    image = torch.from_numpy(rng.random((1, 1, 64, 64), dtype="float32"))
    expected, got = _outputs(model, image), _outputs(loaded, image)
    assert not torch.equal(expected, got)  # really rounded, yet
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-2 * float(expected.abs().max()))


def test_half_precision_refuses_weights_that_overflow(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.network.head.bias[0] = 1e6
    with pytest.raises(ValueError, match="float16"):
        save_model(model, tmp_path / "big", half_precision=True)
    assert not (tmp_path / "big" / WEIGHTS_FILE).exists()


def test_an_existing_model_is_not_replaced_unless_asked(tmp_path):
    folder = save_model(make_model(seed=0), tmp_path / "tiny")
    before = (folder / WEIGHTS_FILE).read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(make_model(seed=1), folder)
    assert (folder / WEIGHTS_FILE).read_bytes() == before
    save_model(make_model(seed=1), folder, overwrite=True)
    assert (folder / WEIGHTS_FILE).read_bytes() != before


def test_corrupt_weights_are_a_clear_error(tmp_path):
    folder = save_model(make_model(), tmp_path / "tiny")
    (folder / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(folder)


@pytest.mark.parametrize("name", ["nuclei", "em-membranes"])
def test_built_in_models_are_small_documented_and_load(name):
    folder = resolve_model_path(name)
    assert (folder / WEIGHTS_FILE).stat().st_size <= 10 * 1024**2
    assert "python scripts/train_builtin_models.py" in (folder / "README.md").read_text()
    model = load_model(name)
    assert model.description.metrics["validation"]["overall"]["n_images"] > 0
    assert name in list_models(include_user=False)
