"""OME-Zarr (NGFF 0.4 and 0.5) images in, multiscale OME-Zarr label images out.

Reading gives the same :class:`~napari_unet.core.io.ImageFile` as a TIFF, with every
resolution level as a lazy zarr array, so the engine reads one tile at a time. Writing hands
out level 0 as an empty, chunked zarr array for the engine's ``out=``; :meth:`LabelsWriter.finish`
then builds the pyramid block by block (nearest neighbour, memory bounded by a few chunks) and
writes the metadata last, in a hidden folder that is renamed into place only when complete: an
interrupted run never leaves anything that looks like a finished label image.

zarr and ome-zarr (the ``zarr`` extra) are imported only once an OME-Zarr is used, so plain
TIFF use needs neither.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io import ImageFile, smallest_label_dtype_of

ZARR_SUFFIX = ".zarr"
WRITE_VERSION = "0.5"
"""NGFF version written by default (zarr format 3); ``"0.4"`` writes zarr format 2."""
READ_VERSIONS = ("0.4", "0.5")
MIN_LEVEL_SIZE = 256
"""The pyramid stops once Y and X are both at most this many pixels."""

# NGFF units (UDUNITS-2 names) in micrometres.
UNITS_UM = {
    "meter": 1e6,
    "decimeter": 1e5,
    "centimeter": 1e4,
    "millimeter": 1e3,
    "micrometer": 1.0,
    "nanometer": 1e-3,
    "angstrom": 1e-4,
    "picometer": 1e-6,
}
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_TYPE_LETTERS = {"time": "T", "channel": "C"}
_ZARR_FORMATS = {"0.4": 2, "0.5": 3}


@dataclass
class OmeZarrImage(ImageFile):
    """An OME-Zarr image: ``data`` is the chosen level, ``levels`` all of them (lazy)."""

    levels: list[Any] = field(default_factory=list)
    """Every resolution level as a lazy zarr array, full resolution first."""
    level: int = 0
    """Which level ``data`` is."""


@dataclass(frozen=True)
class Multiscale:
    """What an OME-Zarr group's ``multiscales`` metadata says (its first multiscale image)."""

    version: str
    axes: str
    """Our axis letters (``TCZYX``), one per NGFF axis."""
    axes_metadata: list[dict[str, Any]]
    paths: list[str]
    """The level arrays' paths inside the group, full resolution first."""
    transforms: list[list[dict[str, Any]]]
    """Each level's ``coordinateTransformations`` (the group-wide ones appended)."""
    is_labels: bool


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names something in a ``.zarr`` folder: the I/O functions dispatch on it."""
    return any(part.lower().endswith(ZARR_SUFFIX) for part in Path(path).parts)


def is_ome_zarr(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a local zarr group with NGFF multiscales metadata (0.4 or 0.5)."""
    path = Path(path)
    if not (path.is_dir() and is_zarr_path(path)):
        return False
    try:
        return "multiscales" in ome_attributes(path)
    except ValueError:
        return False


def ome_attributes(path: Path) -> dict[str, Any]:
    """Return the OME attributes: ``zarr.json`` ``attributes.ome`` (0.5) or ``.zattrs`` (0.4)."""
    v3, v2 = path / "zarr.json", path / ".zattrs"
    try:
        if v3.is_file():
            return dict(json.loads(v3.read_text()).get("attributes", {}).get("ome", {}))
        if v2.is_file():
            return dict(json.loads(v2.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as error:
        raise ValueError(f"corrupt zarr metadata in {path}: {error}") from error
    return {}


def read_multiscale(path: str | os.PathLike[str]) -> Multiscale:
    """Parse and check a group's multiscales metadata, with a clear error for what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no such OME-Zarr folder: {path}")
    attributes = ome_attributes(path)
    if "multiscales" not in attributes:
        raise ValueError(
            f"{path} has no OME-Zarr multiscales metadata (not an NGFF image, or a plate, "
            "or a collection: open one of its images)"
        )
    try:
        multiscale = attributes["multiscales"][0]
        version = str(attributes.get("version") or multiscale.get("version"))
        axes_metadata = [_axis_dict(axis) for axis in multiscale["axes"]]
        datasets = multiscale["datasets"]
        paths = [str(dataset["path"]) for dataset in datasets]
        shared = list(multiscale.get("coordinateTransformations", []))
        transforms = [list(d.get("coordinateTransformations", [])) + shared for d in datasets]
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(f"corrupt OME-Zarr multiscales metadata in {path}: {error!r}") from error
    if version not in READ_VERSIONS:
        raise ValueError(
            f"{path} is OME-Zarr (NGFF) version {version}; napari-unet reads "
            f"{' and '.join(READ_VERSIONS)}"
        )
    if not paths:
        raise ValueError(f"corrupt OME-Zarr multiscales metadata in {path}: no datasets")
    return Multiscale(
        version,
        _axis_letters(axes_metadata, path),
        axes_metadata,
        paths,
        transforms,
        "image-label" in attributes,
    )


def _axis_dict(axis: Any) -> dict[str, Any]:
    return dict(axis) if isinstance(axis, dict) else {"name": str(axis)}


def _axis_letters(axes_metadata: list[dict[str, Any]], path: Path) -> str:
    letters = ""
    for axis in axes_metadata:
        name = str(axis.get("name", ""))
        letter = name.upper() if name.upper() in _AXIS_TYPES else None
        letter = letter or _TYPE_LETTERS.get(str(axis.get("type")))
        if letter is None or letter in letters:
            names = [str(a.get("name")) for a in axes_metadata]
            raise ValueError(
                f"{path} has axes {names}; napari-unet reads the axes t, c, z, y, x "
                "(each at most once)"
            )
        letters += letter
    return letters


def level_scale(multiscale: Multiscale, level: int) -> np.ndarray:
    """Return the size of one pixel of ``level`` along each axis, in the axes' own units."""
    scale = np.ones(len(multiscale.axes))
    for transform in multiscale.transforms[level]:
        if transform.get("type") == "scale":
            if "scale" not in transform:
                raise ValueError("scale transforms stored in a separate file are not supported")
            scale = scale * np.asarray(transform["scale"], dtype=float)
    return scale


def read_ome_zarr(path: str | os.PathLike[str], level: int = 0) -> OmeZarrImage:
    """Open an OME-Zarr image lazily at resolution ``level`` (0 = full resolution).

    Axes come from the NGFF axes; pixel sizes (µm) from the level's scale, for the space axes
    whose unit is a length. Units are optional in NGFF: when no space axis has one and
    full resolution is at scale 1, as a writer that knew no pixel size leaves it (napari-unet
    does, for a TIFF without one), the pixel size is unknown; otherwise a space axis without
    a unit is taken as micrometres, as most writers mean it.
    """
    import zarr

    path = Path(path)
    multiscale = read_multiscale(path)
    count = len(multiscale.paths)
    if not 0 <= level < count:
        raise ValueError(f"{path} has {count} resolution level(s) (0 to {count - 1}); no {level}")
    try:
        levels = [zarr.open_array(path / one, mode="r") for one in multiscale.paths]
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise ValueError(f"cannot open the levels of {path}: {error!r}") from error
    for array in levels:
        if array.ndim != len(multiscale.axes):
            raise ValueError(
                f"{path}: a level has {array.ndim} dimensions but the metadata names "
                f"{len(multiscale.axes)} axes ({multiscale.axes})"
            )
    scale = level_scale(multiscale, level)
    sizes = {}
    if not _pixels_only(multiscale):
        for letter, axis, size in zip(
            multiscale.axes, multiscale.axes_metadata, scale, strict=True
        ):
            factor = UNITS_UM.get(str(axis.get("unit", "micrometer")).lower())
            if letter in "ZYX" and factor is not None and size > 0:
                sizes[letter] = float(size) * factor
    return OmeZarrImage(
        levels[level], multiscale.axes, sizes, multiscale.is_labels, path, levels, level
    )


def _pixels_only(multiscale: Multiscale) -> bool:
    """Whether no space axis has a unit and full resolution is at scale 1: sizes unknown."""
    space = [i for i, letter in enumerate(multiscale.axes) if letter in "ZYX"]
    full = level_scale(multiscale, 0)
    return all("unit" not in multiscale.axes_metadata[i] and full[i] == 1 for i in space)


def label_images(path: str | os.PathLike[str]) -> list[Path]:
    """List the complete label images in an OME-Zarr image's ``labels`` group."""
    folder = Path(path) / "labels"
    try:
        names = ome_attributes(folder).get("labels", []) if folder.is_dir() else []
    except ValueError:
        return []
    return [folder / str(name) for name in names if is_ome_zarr(folder / str(name))]


@dataclass(frozen=True)
class _Layout:
    """Where and how a label image's levels go: shapes, scales, axes metadata, NGFF version."""

    shapes: list[tuple[int, ...]]
    transforms: list[list[dict[str, Any]]]
    axes_metadata: list[dict[str, Any]]
    version: str
    container: Path | None
    """The OME-Zarr image whose ``labels`` group receives the result, if any."""


class LabelsWriter:
    """An OME-Zarr label image being written: level 0 now, the pyramid at :meth:`finish`.

    Use it as a context manager: leaving the block with an error (or without ``finish``)
    deletes what was written, so nothing half-made stays behind.
    """

    def __init__(
        self,
        path: Path,
        layout: _Layout,
        dtype: Any,
        chunks: tuple[int, ...],
        overwrite: bool,
    ) -> None:
        import zarr

        self.path, self.layout, self.overwrite = path, layout, overwrite
        self.finished = False
        self._partial = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._group = zarr.open_group(
            self._partial, mode="w", zarr_format=_ZARR_FORMATS[layout.version]
        )
        self._chunks = chunks
        self._dtype = np.dtype(dtype)
        self.array = self._create_level(0)
        """Level 0, all zeros: write the labels here (e.g. ``segment(..., out=writer.array)``)."""

    def _create_level(self, level: int) -> Any:
        shape = self.layout.shapes[level]
        chunks = tuple(min(c, n) for c, n in zip(self._chunks, shape, strict=True))
        v3 = self.layout.version == "0.5"
        return self._group.create_array(
            str(level),
            shape=shape,
            chunks=chunks,
            dtype=self._dtype,
            fill_value=0,
            dimension_names=[a["name"] for a in self.layout.axes_metadata] if v3 else None,
            chunk_key_encoding={"name": "default" if v3 else "v2", "separator": "/"},
        )

    def finish(self) -> list[Any]:
        """Build the pyramid, write the metadata, move the result into place; return its levels."""
        previous = self.array
        for level in range(1, len(self.layout.shapes)):
            current = self._create_level(level)
            downsample_into(previous, current)
            previous = current
        self._write_metadata()
        self._move_into_place()
        if self.layout.container is not None:
            _list_label(self.layout.container, self.path.name, self.layout.version)
        self.finished = True
        return read_ome_zarr(self.path).levels

    def _write_metadata(self) -> None:
        from ome_zarr.format import format_from_version
        from ome_zarr.writer import add_metadata, write_multiscales_metadata

        fmt = format_from_version(self.layout.version)
        datasets = [
            {"path": str(level), "coordinateTransformations": transforms}
            for level, transforms in enumerate(self.layout.transforms)
        ]
        write_multiscales_metadata(
            self._group, datasets, fmt=fmt, axes=self.layout.axes_metadata, name=self.path.name
        )
        label: dict[str, Any] = {"version": self.layout.version}
        if self.layout.container is not None:
            label["source"] = {"image": "../../"}
        add_metadata(self._group, {"image-label": label}, fmt=fmt)

    def _move_into_place(self) -> None:
        if self.path.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, old)
            os.replace(self._partial, self.path)
            shutil.rmtree(old)
        else:
            os.replace(self._partial, self.path)

    def discard(self) -> None:
        """Delete the unfinished result."""
        shutil.rmtree(self._partial, ignore_errors=True)

    def __enter__(self) -> LabelsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.finished:
            self.discard()


def create_labels(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    axes: str,
    *,
    pixel_size_um: dict[str, float] | None = None,
    dtype: Any = np.uint32,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    version: str = WRITE_VERSION,
) -> LabelsWriter:
    """Start an OME-Zarr label image; write level 0 into ``.array``, then call ``finish()``.

    ``path`` is a standalone ``.ome.zarr`` (its pyramid halves Y and X down to
    :data:`MIN_LEVEL_SIZE`), or ``<image>.ome.zarr/labels/<name>`` inside an existing OME-Zarr
    image: then the labels get the image's levels, scales and NGFF version, as the NGFF
    ``labels`` group says. Existing labels are refused unless ``overwrite``.
    """
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    axes = axes.upper()
    if len(axes) != len(shape) or len(set(axes)) != len(axes) or not set(axes) <= set("TZYX"):
        raise ValueError(f"label axes {axes!r} must be distinct letters from TZYX, one per dim")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if version not in _ZARR_FORMATS:
        raise ValueError(f"NGFF version {version!r} cannot be written; use 0.4 or 0.5")
    container = path.parent.parent if path.parent.name == "labels" else None
    if container is not None and is_ome_zarr(container):
        layout = _container_layout(container, shape, axes)
    elif container is not None and is_zarr_path(container):
        raise ValueError(f"{container} is not an OME-Zarr image to add labels to")
    else:
        layout = _standalone_layout(shape, axes, pixel_size_um or {}, version)
    if chunks is None:
        chunks = default_chunks(shape, axes)
    return LabelsWriter(path, layout, dtype, tuple(int(c) for c in chunks), overwrite)


def default_chunks(shape: Sequence[int], axes: str) -> tuple[int, ...]:
    """About a million pixels a chunk: 1024x1024 planes, or 16x256x256 blocks in 3D."""
    side = 256 if "Z" in axes else 1024
    sizes = {"T": 1, "C": 1, "Z": 16, "Y": side, "X": side}
    return tuple(min(int(n), sizes[a]) for a, n in zip(axes, shape, strict=True))


def _standalone_layout(
    shape: tuple[int, ...], axes: str, pixel_size_um: dict[str, float], version: str
) -> _Layout:
    shapes, steps = [shape], [np.ones(len(shape))]
    yx = [i for i, a in enumerate(axes) if a in "YX"]
    while max(shapes[-1][i] for i in yx) > MIN_LEVEL_SIZE:
        shapes.append(tuple(-(-n // 2) if i in yx else n for i, n in enumerate(shapes[-1])))
        steps.append(np.where(np.isin(np.arange(len(shape)), yx), steps[-1] * 2, 1.0))
    base = np.array([float(pixel_size_um.get(a, 1.0)) for a in axes])
    axes_metadata = []
    for letter in axes:
        axis = {"name": letter.lower(), "type": _AXIS_TYPES[letter]}
        if letter in pixel_size_um:
            axis["unit"] = "micrometer"
        axes_metadata.append(axis)
    transforms = [[{"type": "scale", "scale": (base * step).tolist()}] for step in steps]
    return _Layout(shapes, transforms, axes_metadata, version, None)


def _container_layout(container: Path, shape: tuple[int, ...], axes: str) -> _Layout:
    """Labels for an image: its levels and scales without the channel axis."""
    image = read_ome_zarr(container)
    multiscale = read_multiscale(container)
    keep = [i for i, letter in enumerate(image.axes) if letter != "C"]
    image_axes = "".join(image.axes[i] for i in keep)
    image_shape = tuple(image.levels[0].shape[i] for i in keep)
    if (axes, shape) != (image_axes, image_shape):
        raise ValueError(
            f"labels {shape} with axes {axes} do not match the image {container}: "
            f"{image_shape} with axes {image_axes}"
        )
    transforms = [
        [_drop_axes(transform, keep) for transform in level] for level in multiscale.transforms
    ]
    return _Layout(
        [tuple(level.shape[i] for i in keep) for level in image.levels],
        transforms,
        [multiscale.axes_metadata[i] for i in keep],
        multiscale.version,
        container,
    )


def _drop_axes(transform: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    kept = dict(transform)
    for key in ("scale", "translation"):
        if key in kept:
            kept[key] = [kept[key][i] for i in keep]
    return kept


def _list_label(container: Path, name: str, version: str) -> None:
    """Add ``name`` to the image's ``labels`` group (created if missing), once."""
    import zarr
    from ome_zarr.format import format_from_version
    from ome_zarr.writer import add_metadata

    group = zarr.open_group(container / "labels", mode="a", zarr_format=_ZARR_FORMATS[version])
    names = [str(n) for n in ome_attributes(container / "labels").get("labels", [])]
    fmt = format_from_version(version)
    add_metadata(group, {"labels": [*names, name] if name not in names else names}, fmt=fmt)
    if version == "0.5":
        add_metadata(group, {"version": version}, fmt=fmt)


def blocks(shape: Sequence[int], block_shape: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """Cut ``shape`` into blocks of ``block_shape`` (smaller at the far edges), in C order."""
    ranges = [range(0, n, b) for n, b in zip(shape, block_shape, strict=True)]
    for starts in itertools.product(*ranges):
        yield tuple(
            slice(s, min(s + b, n)) for s, b, n in zip(starts, block_shape, shape, strict=True)
        )


def downsample_into(source: Any, target: Any) -> None:
    """Fill ``target`` with nearest-neighbour samples of ``source``, one target chunk at a time.

    Pixel ``j`` of ``target`` takes pixel ``floor(j * len(source) / len(target))`` along each
    axis (``2j`` for halving), so labels stay labels; each step reads only the source region
    behind one target chunk.
    """
    factors = [s / t for s, t in zip(source.shape, target.shape, strict=True)]
    for block in blocks(target.shape, target.chunks):
        indices = [
            np.minimum(np.floor(np.arange(b.start, b.stop) * f).astype(np.int64), n - 1)
            for b, f, n in zip(block, factors, source.shape, strict=True)
        ]
        region = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in indices)
        data = np.asarray(source[region])
        target[block] = data[np.ix_(*(i - i[0] for i in indices))]


def write_labels(
    path: str | os.PathLike[str],
    labels: Any,
    axes: str,
    pixel_size_um: dict[str, float] | None = None,
    *,
    overwrite: bool = False,
    chunks: Sequence[int] | None = None,
    version: str = WRITE_VERSION,
) -> Path:
    """Write a whole label array (numpy, zarr or dask) as a multiscale OME-Zarr label image.

    The array is read one chunk at a time (twice: once for the smallest unsigned dtype that
    holds every label, once to copy), so a lazy array larger than memory streams through.
    """
    shape = tuple(int(n) for n in labels.shape)
    block_shape = tuple(chunks) if chunks is not None else default_chunks(shape, axes.upper())
    dtype = smallest_label_dtype_of(labels, blocks(shape, block_shape))
    with create_labels(
        path,
        shape,
        axes,
        pixel_size_um=pixel_size_um,
        dtype=dtype,
        chunks=block_shape,
        overwrite=overwrite,
        version=version,
    ) as writer:
        for block in blocks(shape, block_shape):
            writer.array[block] = np.asarray(labels[block])
        writer.finish()
    return Path(path)
