"""napari reader: TIFF, OME-TIFF and OME-Zarr images as layers that keep their pixel size.

It goes through :func:`napari_unet.core.io.images.read_image`, so napari, the CLI and the Python API
read a file the same way. An OME-Zarr image opens as a multiscale layer of lazy zarr levels,
followed by the label images of its ``labels`` group as Labels layers. We read OME-Zarr
ourselves rather than defer to napari-ome-zarr (napari then asks which plugin to use when both
are installed): the plugin should open what its CLI and API write without another plugin, and
its layers get the same µm scale and axis names (``z``, ``y``, ``x``) as a TIFF, which the
Segment widget reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari_unet._napari.layer_data import LayerDataTuple, image_file_layer
from napari_unet.core.io import is_ome_zarr, label_images, read_image
from napari_unet.names import TIFF_SUFFIXES

PathOrPaths = str | list[str]
ReaderFunction = Callable[[PathOrPaths], list[LayerDataTuple]]


def get_reader(path: PathOrPaths) -> ReaderFunction | None:
    """Return the plain reader for paths we can read, else ``None`` (napari then asks others)."""
    return read_layers if _readable(path) else None


def read_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """One layer per image (Labels for label images), then an OME-Zarr image's label images."""
    layers = []
    for one in _as_list(path):
        layers.append(image_file_layer(read_image(one)))
        layers += [image_file_layer(read_image(labels)) for labels in label_images(one)]
    return layers


def _as_list(path: PathOrPaths) -> list[str]:
    return [path] if isinstance(path, str | Path) else list(path)


def _readable(path: PathOrPaths) -> bool:
    paths = _as_list(path)
    return bool(paths) and all(_readable_one(Path(one)) for one in paths)


def _readable_one(path: Path) -> bool:
    return (path.suffix.lower() in TIFF_SUFFIXES and path.is_file()) or is_ome_zarr(path)
