"""Which models the napari front end offers.

The Segment and Train widgets share these, so a model trained in one dock appears in the
other at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from psygnal import SignalInstance

if TYPE_CHECKING:
    from napari_unet.core.models import Model

DEFAULT_MODEL = "nuclei"

models_changed = SignalInstance((), name="models_changed")
"""Emitted after a model was saved, so that model pickers refresh their choices."""


def default_model() -> str:
    """Return ``nuclei`` if it is available, else the first model there is."""
    from napari_unet.core.models import list_models

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
    from napari_unet.core.models import list_models

    return [(name, name) for name in list_models()]
