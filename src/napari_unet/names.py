"""Names and constants every front end shares, importable without torch (the CLI reads them).

One place for the default model, the output kinds and the file suffixes, so the API, the
CLI and the napari plugin cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

DEFAULT_MODEL = "nuclei"
"""The built-in model used when none is named."""

Output = Literal["labels", "instances", "semantic", "probabilities"]
OUTPUTS: tuple[Output, ...] = ("labels", "instances", "semantic", "probabilities")
"""What a prediction returns: ``labels`` is the model's own kind (instances or semantic)."""

Target = Literal["instances", "semantic"]
TARGETS: tuple[Target, ...] = ("instances", "semantic")
"""What a model learns: one label per object, or one class per pixel."""

Representation = Literal["boundaries", "distance", "flows"]
REPRESENTATIONS: tuple[Representation, ...] = ("boundaries", "distance", "flows")
"""How instance models encode objects in their outputs (docs/training.md)."""

LossName = Literal["ce", "dice", "ce+dice"]
LOSSES: tuple[LossName, ...] = ("ce", "dice", "ce+dice")
"""Training losses: cross-entropy, soft Dice, or their sum."""

DEFAULT_PERCENTILES = (1.0, 99.8)
"""Percentile normalisation: these percentiles of the image become 0 and 1 unless a card
says otherwise."""

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"
"""A folder with this suffix is one (OME-)Zarr image, not a folder of images."""
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr")
"""Suffixes of the images we read, longest first so ``.ome.tif`` wins over ``.tif``."""


def image_stem(path: str | Path) -> str:
    """Return a file's name without its image suffix (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
