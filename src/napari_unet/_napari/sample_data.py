"""Sample images shipped in the package (see ``samples/README.md`` for sources and licences).

They open through the same reader as any file, so a sample behaves like a user's own image.
"""

from __future__ import annotations

from pathlib import Path

from napari_unet._napari.layer_data import LayerDataTuple, image_file_layer
from napari_unet.core.io import read_image

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


def nuclei() -> list[LayerDataTuple]:
    """Open fluorescent nuclei from the Data Science Bowl 2018 (CC0): try the ``nuclei`` model."""
    return [image_file_layer(read_image(SAMPLES_DIR / "nuclei.tif"))]


def em() -> list[LayerDataTuple]:
    """Open an electron-microscopy slice from ISBI 2012: try the ``em-membranes`` model."""
    return [image_file_layer(read_image(SAMPLES_DIR / "em.tif"))]
