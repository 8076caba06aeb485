"""Prediction: from an image of any size to labels, probabilities or distances.

:func:`segment` is the one entry point (the API, the CLI and the napari dock call it). It
picks a strategy: in memory (:mod:`.predictor`, tiles from :mod:`.tiling`, one forward pass
in :mod:`.inference`), blockwise for images larger than memory (:mod:`.blocks`,
:mod:`.blockwise`, seams joined by :mod:`.stitching`), on a dask cluster (:mod:`.distributed`),
at the model's object size (:mod:`.object_size`), and a 2D model's objects joined through a
stack (:mod:`.slice_join`). :mod:`.postprocess` turns probabilities into labels and
:mod:`.memory` sizes tiles and blocks to the memory there is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_unet._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Predictor": ".predictor",
        "segment": ".predictor",
    },
)

if TYPE_CHECKING:
    from .predictor import Predictor as Predictor
    from .predictor import segment as segment
