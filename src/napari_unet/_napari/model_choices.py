"""Which models the napari front end offers.

The Segment and Train widgets share these, so a model trained in one dock appears in the
other at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from psygnal import SignalInstance

from napari_unet.names import DEFAULT_MODEL

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_unet.core.models.registry import Model, ModelDescription


SUGGESTED_MODEL = "napari-unet model"
"""Key of an Image layer's ``metadata`` that names the model meant for it (the samples set it)."""

PIXEL_SIZE_MATCH = 4.0
"""A model fits an image whose pixels are at most this many times larger or smaller than the
pixels it was trained on (its card's ``pixel_size_um``)."""

models_changed = SignalInstance((), name="models_changed")
"""Emitted after a model was saved, so that model pickers refresh their choices."""


def default_model() -> str:
    """Return ``nuclei`` if it is available, else the first model there is."""
    from napari_unet.core.models.registry import list_models

    available = list_models()
    return DEFAULT_MODEL if DEFAULT_MODEL in available or not available else available[0]


def model_label(model: str | Path | Model) -> str:
    """Name a model in layer names: its name, or its folder's name for a path."""
    if not isinstance(model, str | Path):
        return model.name
    path = Path(model)
    return path.parent.name if path.name == "model.json" else path.name


def saved_models() -> list[tuple[str, str]]:
    """Return ``(label, value)`` choices for every built-in and saved model, built-ins first."""
    from napari_unet.core.models.registry import list_models

    return [(name, name) for name in list_models()]


def suggested_model(layer: Image, current: str | None = None) -> str | None:
    """Name the model meant for an image, or ``None`` when the image does not tell.

    The image's ``metadata`` may name it (the EM sample names ``em-membranes``). Otherwise,
    when the ``current`` model was not trained at about the image's pixel size (in a length
    unit), the first model that was: an EM image at a few nanometres a pixel gets the EM
    model rather than ``nuclei``, and a fine-tuned EM model the user chose stays.
    """
    from napari_unet.core.models.registry import describe_models

    models = dict(describe_models())
    named = layer.metadata.get(SUGGESTED_MODEL)
    if named in models:
        return named
    pixel_um = _pixel_size_um(layer)
    if pixel_um is None or _trained_at(models.get(current), pixel_um):
        return None
    return next((name for name, card in models.items() if _trained_at(card, pixel_um)), None)


def _trained_at(description: ModelDescription | None, pixel_um: float) -> bool:
    """Whether a model's card states a pixel size near ``pixel_um``."""
    trained = description.pixel_size_um if description is not None else None
    return bool(trained) and 1 / PIXEL_SIZE_MATCH <= pixel_um / trained <= PIXEL_SIZE_MATCH


def _pixel_size_um(layer: Image) -> float | None:
    """Return the layer's pixel size along X in micrometres; ``None`` if its unit is no length."""
    import pint

    try:
        return float((layer.scale[-1] * layer.units[-1]).to("micrometer").magnitude)
    except pint.DimensionalityError:  # "pixel": napari's unit for "not known"
        return None
