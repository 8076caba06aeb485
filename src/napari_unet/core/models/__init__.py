"""Models as data: networks, their cards, their files and the registry.

The U-Net (:mod:`.network`), its card (:mod:`.model_types`), the files and the registry of
built-in and user models (:mod:`.registry`), the checks of a model folder before any network
is built (:mod:`.card_checks`), and widening a trained network (:mod:`.widen`).
Weights are safetensors, never pickles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_unet._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Model": ".model_types",
        "ModelDescription": ".model_types",
        "describe_models": ".registry",
        "list_models": ".registry",
        "load_model": ".registry",
        "save_model": ".registry",
    },
)

if TYPE_CHECKING:
    from .model_types import Model as Model
    from .model_types import ModelDescription as ModelDescription
    from .registry import (
        describe_models as describe_models,
    )
    from .registry import (
        list_models as list_models,
    )
    from .registry import (
        load_model as load_model,
    )
    from .registry import (
        save_model as save_model,
    )
