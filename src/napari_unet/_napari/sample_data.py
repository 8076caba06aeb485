"""Sample images shipped in the package (see ``samples/README.md`` for sources and licences).

They open through the same reader as any file, so a sample behaves like a user's own image.
"""

from __future__ import annotations

from pathlib import Path

from napari_unet._napari.layer_data import LayerDataTuple, image_file_layer
from napari_unet._napari.model_choices import SUGGESTED_MODEL
from napari_unet.core.io import read_image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


def nuclei() -> list[LayerDataTuple]:
    """Open fluorescent nuclei from the Data Science Bowl 2018 (CC0), for the ``nuclei`` model."""
    return [_sample("nuclei.tif", "nuclei")]


def em() -> list[LayerDataTuple]:
    """Open an electron-microscopy slice from ISBI 2012, for the ``em-membranes`` model."""
    return [_sample("em.tif", "em-membranes")]


def _sample(file_name: str, model: str) -> LayerDataTuple:
    """Open a sample as any file opens, its layer naming the model that the Segment dock picks."""
    data, meta, kind = image_file_layer(read_image(SAMPLES_DIR / file_name))
    return data, {**meta, "metadata": {SUGGESTED_MODEL: model}}, kind
