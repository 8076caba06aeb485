"""Model files (safetensors weights + a JSON card) and the registry of built-in and user models.

A model is a folder holding ``weights.safetensors`` and ``model.json``. Loading never
unpickles anything: weights are plain tensors and the card is JSON, so a model file is data,
never code.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from napari_unet.core.bioimageio import is_bioimageio_source
from napari_unet.core.io.files import atomic_write
from napari_unet.core.models.card_checks import check_weights, read_card
from napari_unet.core.models.model_types import (
    FORMAT_VERSION,
    Model,
    ModelDescription,
    network_from_weights,
)

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model.json"
BUILTIN_DIR = Path(__file__).resolve().parents[2] / "models"
USER_MODELS_ENV = "NAPARI_UNET_MODELS_DIR"


def user_models_dir() -> Path:
    """Where models trained by the user are saved and listed (``$NAPARI_UNET_MODELS_DIR``)."""
    configured = os.environ.get(USER_MODELS_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "share" / "napari-unet" / "models"


def _model_dirs(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {
        child.name: child
        for child in sorted(root.iterdir())
        if (child / CARD_FILE).is_file() and (child / WEIGHTS_FILE).is_file()
    }


def list_models(include_user: bool = True) -> list[str]:
    """Names of the built-in models, then those the user trained and saved; broken ones warn."""
    return [name for name, _ in _checked_models(include_user)]


def _checked_models(include_user: bool) -> list[tuple[str, ModelDescription]]:
    """Each model whose card and weight shapes pass the checks; a warning names each other one."""
    folders = _model_dirs(BUILTIN_DIR)
    if include_user:
        user = _model_dirs(user_models_dir())
        folders |= {name: folder for name, folder in user.items() if name not in folders}
    described = []
    for name, folder in folders.items():
        try:
            described.append((name, read_description(folder)))
        except ValueError as error:
            warnings.warn(f"skipping a broken model: {error}", UserWarning, stacklevel=3)
    return described


def read_description(folder: Path) -> ModelDescription:
    """Read and check a model folder's card, and its weights' names and shapes against it."""
    try:
        description = ModelDescription.from_dict(read_card(folder / CARD_FILE))
        check_weights(folder / WEIGHTS_FILE, description.architecture)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"model {folder.name!r} ({folder}) is invalid: {error}") from error
    return description


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Find a model folder by name (built-in first, then user) or by path."""
    path = Path(name_or_path).expanduser()
    if path.name == CARD_FILE or path.name == WEIGHTS_FILE:
        path = path.parent
    if (path / CARD_FILE).is_file():
        return path
    for registry in (_model_dirs(BUILTIN_DIR), _model_dirs(user_models_dir())):
        if str(name_or_path) in registry:
            return registry[str(name_or_path)]
    available = ", ".join(list_models()) or "none"
    raise FileNotFoundError(
        f"no model named or found at {str(name_or_path)!r}; built-in and saved models: {available}"
    )


def load_model(name_or_path: str | os.PathLike[str] | Model, device: str = "cpu") -> Model:
    """Load a model by built-in name, user-model name, folder or bioimage.io package (no pickle)."""
    if isinstance(name_or_path, Model):
        return name_or_path
    if is_bioimageio_source(name_or_path):
        from napari_unet.core.bioimageio.load import load_bioimageio

        return load_bioimageio(name_or_path, device=device)
    folder = resolve_model_path(name_or_path)
    description = read_description(folder)
    try:
        network = network_from_weights(description.architecture, folder / WEIGHTS_FILE, device)
    except Exception as error:  # safetensors raises its own types for corrupt files
        raise ValueError(f"weights {folder / WEIGHTS_FILE} cannot be used: {error}") from error
    return Model(description, network)


def save_model(
    model: Model,
    folder: str | os.PathLike[str],
    overwrite: bool = False,
    half_precision: bool = False,
) -> Path:
    """Write ``model`` to ``folder`` atomically; never replaces a model unless ``overwrite``.

    ``half_precision`` stores floating-point weights as float16, which halves the file (how
    the built-in models stay small); loading casts them back to the network's float32.
    """
    folder = Path(folder).expanduser()
    if (folder / CARD_FILE).exists() and not overwrite:
        raise FileExistsError(
            f"a model already exists at {folder}; pass overwrite=True to replace it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        key: _stored(key, value.detach().to("cpu").contiguous(), half_precision)
        for key, value in model.network.state_dict().items()
    }
    metadata = {"format_version": str(FORMAT_VERSION), "name": model.name}
    # Without overwrite both names are taken exclusively: of two saves racing for one folder,
    # one fails rather than mixing its weights with the other's card.
    atomic_write(
        folder / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata=metadata), overwrite
    )
    card = json.dumps(model.description.to_dict(), indent=2)
    atomic_write(
        folder / CARD_FILE,
        lambda tmp: Path(tmp).write_text(card + "\n", encoding="utf-8"),
        overwrite,
    )
    return folder


def _stored(key: str, tensor: torch.Tensor, half_precision: bool) -> torch.Tensor:
    if not (half_precision and tensor.is_floating_point()):
        return tensor
    half = tensor.to(torch.float16)
    if not torch.isfinite(half).all():
        raise ValueError(f"weight {key!r} does not fit in float16; save in full precision")
    return half


def describe_models() -> list[tuple[str, ModelDescription]]:
    """Each usable model's name and card, for listings (CLI ``models``, widget pickers)."""
    return _checked_models(include_user=True)
