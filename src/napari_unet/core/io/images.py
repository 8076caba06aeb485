"""TIFF reading and writing that keeps axes and pixel sizes (plain, ImageJ and OME-TIFF).

Large files are opened lazily (memory-mapped, or as a zarr view that decompresses one chunk
at a time), so the engine reads them tile by tile. Label images are written compressed, in
the smallest unsigned dtype that holds them, atomically: a temporary file is renamed into
place only once complete, so an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import itertools
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core.io.file_checks import (
    check_declared_planes,
    check_series,
    checked_pixel_sizes,
    number,
)
from napari_unet.core.io.files import atomic_write
from napari_unet.core.io.image_file import ImageFile, smallest_label_dtype, smallest_label_dtype_of

LABELS_SOFTWARE = "napari-unet labels"
"""The TIFF Software tag of label images we write; the reader knows them by it."""
IMAGE_SOFTWARE = "napari-unet"
LAZY_THRESHOLD_BYTES = 256 * 2**20
"""``read_image(lazy=None)`` opens files larger than this lazily."""

_TO_MICROMETRES = {
    "m": 1e6,
    "mm": 1e3,
    "cm": 1e4,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "\\u00B5m": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "pm": 1e-6,
    "Å": 1e-4,
    "angstrom": 1e-4,
}
# tifffile's letters for axes that stand for our Z (Q: unknown, I: image sequence) and C.
_AXIS_LETTERS = {"S": "C", "Q": "Z", "I": "Z"}


def read_image(path: str | os.PathLike[str], lazy: bool | None = None, level: int = 0) -> ImageFile:
    """Read a TIFF (plain, ImageJ hyperstack or OME) or an OME-Zarr with its axes and pixel size.

    ``lazy=None`` opens files over :data:`LAZY_THRESHOLD_BYTES` lazily; ``True`` always does.
    OME-Zarr is always lazy; ``level`` picks its resolution level (0 = full resolution).
    """
    from napari_unet.core.io.omezarr import is_zarr_path, read_ome_zarr

    if is_zarr_path(path):
        return read_ome_zarr(path, level)
    path = Path(path)
    if level != 0:
        raise ValueError(f"{path} has one resolution level; level {level} does not exist")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder, not an image; give a .tif file or an OME-Zarr folder (.zarr)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with tifffile.TiffFile(path) as tiff:
            check_declared_planes(tiff, path)  # before tifffile builds a series from the claim
            if not tiff.series:
                raise ValueError("the file holds no image (corrupt or truncated?)")
            series = tiff.series[0]
            axes = _our_axes(series.axes)
            pixel_size = checked_pixel_sizes(_pixel_size_um(tiff, axes), path)
            is_labels = (tiff.pages[0].software or "") == LABELS_SOFTWARE
            if lazy is None:
                lazy = series.size * series.dtype.itemsize > LAZY_THRESHOLD_BYTES
            check_series(series, lazy)
            data = None if lazy else series.asarray()
        if data is None:
            data = _open_lazy(path)
    except MemoryError as error:
        raise MemoryError(f"not enough memory to read the pixels of {path}") from error
    except Exception as error:  # tifffile and its codecs raise many types on corrupt files
        raise ValueError(f"cannot read {path} as a TIFF: {_reason(error)}") from error
    return ImageFile(data, axes, pixel_size, is_labels, path)


def _reason(error: Exception) -> str:
    """Say what went wrong, never empty, with the type where the text alone says little."""
    if isinstance(error, ValueError | OSError) and str(error):
        return str(error)
    return f"{type(error).__name__} {error}".strip() + " (corrupt file?)"


def _open_lazy(path: Path) -> Any:
    """Open a memory map for uncompressed files, else a zarr view that decodes chunk by chunk."""
    try:
        return tifffile.memmap(path, mode="r")
    except ValueError:
        pass
    try:
        import zarr
    except ImportError:  # the optional "lazy" extra: without it, read the whole file
        return tifffile.imread(path)
    return zarr.open(tifffile.imread(path, aszarr=True), mode="r")


def _our_axes(tiff_axes: str) -> str:
    letters = "".join(_AXIS_LETTERS.get(letter, letter) for letter in tiff_axes.upper())
    if len(set(letters)) != len(letters):  # e.g. planar samples and channels: keep theirs
        letters = tiff_axes.upper()
    return letters


def _pixel_size_um(tiff: tifffile.TiffFile, axes: str) -> dict[str, float]:
    sizes: dict[str, float] = {}
    if tiff.is_ome and tiff.ome_metadata:
        sizes = _ome_pixel_size(tiff.ome_metadata)
    elif tiff.is_imagej:
        metadata = tiff.imagej_metadata or {}
        factor = _TO_MICROMETRES.get(str(metadata.get("unit", "")).strip())
        if factor is not None:
            sizes = _resolution_sizes(tiff.pages[0], factor)
            if "spacing" in metadata:
                sizes["Z"] = number(metadata["spacing"]) * factor
    else:
        page = tiff.pages[0]
        if page.tags.get("ResolutionUnit") and page.tags["ResolutionUnit"].value == 3:
            sizes = _resolution_sizes(page, 1e4)  # pixels per centimetre
    return {axis: size for axis, size in sizes.items() if axis in axes}


def _resolution_sizes(page: Any, unit_um: float) -> dict[str, float]:
    sizes = {}
    for axis, tag in (("X", "XResolution"), ("Y", "YResolution")):
        if tag in page.tags:
            numerator, denominator = page.tags[tag].value
            if numerator > 0 and denominator > 0 and numerator != denominator:
                sizes[axis] = unit_um * denominator / numerator
    return sizes


def _ome_pixel_size(ome_xml: str) -> dict[str, float]:
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return {}
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None)
    if pixels is None:
        return {}
    sizes = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        factor = _TO_MICROMETRES.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is not None and factor is not None:
            sizes[axis] = number(value) * factor
    return sizes


def write_labels(
    path: str | os.PathLike[str],
    labels: Any,
    axes: str,
    pixel_size_um: dict[str, float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label image as compressed OME-TIFF in its smallest unsigned dtype, atomically.

    A ``.zarr`` path (or ``<image>.ome.zarr/labels/<name>``) writes a multiscale OME-Zarr
    label image instead, streamed chunk by chunk (:func:`napari_unet.core.io.omezarr.write_labels`).
    """
    from napari_unet.core.io import omezarr

    if omezarr.is_zarr_path(path):
        return omezarr.write_labels(path, labels, axes, pixel_size_um, overwrite=overwrite)
    if isinstance(labels, np.ndarray) or not hasattr(labels, "shape"):
        array = np.asarray(labels)
        labels = array.astype(smallest_label_dtype(array), copy=False)
    else:  # lazy (zarr, dask): the dtype from one band at a time, then streamed
        labels = _Cast(labels, smallest_label_dtype_of(labels, _band_regions(labels)))
    return write_image(path, labels, axes, pixel_size_um, overwrite, software=LABELS_SOFTWARE)


def write_image(
    path: str | os.PathLike[str],
    data: Any,
    axes: str,
    pixel_size_um: dict[str, float] | None = None,
    overwrite: bool = False,
    software: str = IMAGE_SOFTWARE,
) -> Path:
    """Write any image (e.g. probabilities) as compressed OME-TIFF, atomically.

    Refuses to replace an existing file unless ``overwrite``, and any place inside an
    OME-Zarr image (:func:`napari_unet.core.io.omezarr.check_write_place`).
    """
    from napari_unet.core.io.omezarr import check_write_place

    path = Path(path)
    check_write_place(path, labels=False)
    lazy = hasattr(data, "shape") and not isinstance(data, np.ndarray)
    array = data if lazy else np.asarray(data)
    axes = axes.upper()
    if len(axes) != len(array.shape):
        raise ValueError(f"axes {axes!r} do not match data of shape {array.shape}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    metadata: dict[str, Any] = {"axes": axes}
    for axis, size in (pixel_size_um or {}).items():
        if axis.upper() in "XYZ" and axis.upper() in axes:
            metadata[f"PhysicalSize{axis.upper()}"] = float(size)
            metadata[f"PhysicalSize{axis.upper()}Unit"] = "µm"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        path,
        lambda temporary: tifffile.imwrite(
            temporary,
            _tiles(array) if lazy else array,
            **_streamed(array) if lazy else {},
            ome=True,
            metadata=metadata,
            compression="zlib",
            software=software,
        ),
        overwrite=overwrite,
    )
    return path


STREAM_TILE = (256, 256)
"""TIFF tile shape of images written from lazy arrays, one band of the source at a time."""


def _band_regions(data: Any) -> Iterator[tuple[Any, ...]]:
    """Bands of Y rows of a lazy array, plane by plane (a chunk's height, at least a tile's)."""
    *lead, height, _ = data.shape
    chunks = getattr(data, "chunks", None)
    rows = int(chunks[-2]) if chunks and isinstance(chunks[-2], int | np.integer) else 1024
    rows = max(STREAM_TILE[0], rows // STREAM_TILE[0] * STREAM_TILE[0])
    for plane in itertools.product(*map(range, lead)):
        for top in range(0, height, rows):
            yield (*plane, slice(top, top + rows))


def _streamed(data: Any) -> dict[str, Any]:
    """Return what tifffile needs besides the tiles of a lazy array (shape, dtype, tile)."""
    return {"shape": tuple(data.shape), "dtype": np.dtype(data.dtype), "tile": STREAM_TILE}


def _tiles(data: Any) -> Iterator[np.ndarray]:
    """TIFF tiles of a lazy array in file order: plane by plane, row-major within a plane."""
    tile_y, tile_x = STREAM_TILE
    for region in _band_regions(data):
        band = np.asarray(data[region])
        for top in range(0, band.shape[0], tile_y):
            for left in range(0, band.shape[1], tile_x):
                yield band[top : top + tile_y, left : left + tile_x]


class _Cast:
    """A lazy array read in another dtype (labels shrunk to their smallest dtype as written)."""

    def __init__(self, data: Any, dtype: np.dtype) -> None:
        self.data, self.dtype, self.shape = data, dtype, tuple(data.shape)
        self.chunks = getattr(data, "chunks", None)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.data[index]).astype(self.dtype)


def describe_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Shape, dtype, axes and pixel size of an image file, without reading its pixels."""
    image = read_image(path, lazy=True)
    return {
        "path": str(path),
        "shape": image.shape,
        "dtype": str(np.dtype(image.data.dtype)),
        "axes": image.axes,
        "pixel_size_um": image.pixel_size_um,
        "labels": image.is_labels,
        "levels": [tuple(level.shape) for level in getattr(image, "levels", [image.data])],
    }
