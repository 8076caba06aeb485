"""napari reader: TIFF and OME-TIFF files as layers that keep their pixel size.

It goes through :func:`napari_unet.core.io.read_image`, so napari, the CLI and the Python API
read a file the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari_unet._napari.layer_data import LayerDataTuple, image_file_layer
from napari_unet.core.io import read_image

PathOrPaths = str | list[str]
ReaderFunction = Callable[[PathOrPaths], list[LayerDataTuple]]

TIFF_SUFFIXES = (".tif", ".tiff")


def get_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return the plain reader for paths we can read, else ``None`` (napari then asks others)."""
    return read_layers if _readable(path) else None


def read_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """One layer per file: an Image layer, or a Labels layer for files our writer made."""
    return [image_file_layer(read_image(one)) for one in _as_list(path)]


def _as_list(path: PathOrPaths) -> list[str]:
    return [path] if isinstance(path, str | Path) else list(path)


def _readable(path: PathOrPaths) -> bool:
    paths = _as_list(path)
    return bool(paths) and all(_readable_one(Path(one)) for one in paths)


def _readable_one(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES and path.is_file()
