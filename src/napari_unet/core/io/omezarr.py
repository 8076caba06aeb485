"""OME-Zarr (NGFF 0.4 and 0.5) images in, multiscale OME-Zarr label images out.

Reading gives the same :class:`~napari_unet.core.io.image_file.ImageFile` as a TIFF, with every
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
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io.files import missing_folders, remove_empty, write_places
from napari_unet.core.io.image_file import ImageFile, default_chunks, smallest_label_dtype_of
from napari_unet.names import ZARR_SUFFIX

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

MAX_METADATA_BYTES = 16 * 2**20
"""A metadata file (``zarr.json``, ``.zattrs``, ``.zarray``) larger than this is refused."""
MAX_CHUNK_BYTES = 2**30
"""A chunk is read whole for any pixel in it: larger ones are refused before any read."""
MAX_DECLARED_PIXELS = 2**48
"""No level may claim more pixels than this (a 16-million-pixel-square plane)."""
SPARSE_CHECK_PIXELS = 2**30
"""Above this many pixels, a level must hold at least :data:`MIN_HELD_SHARE` of its chunks."""
MIN_HELD_SHARE = 0.01
MAX_LEVELS = 64
"""More resolution levels than this is no pyramid (each level at most the one before)."""
_METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_TRANSFORM_KEYS = {"scale": "scale", "translation": "translation", "identity": None}


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
            return dict(_metadata(v3).get("attributes", {}).get("ome", {}))
        if v2.is_file():
            return dict(_metadata(v2))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as error:
        raise ValueError(f"corrupt zarr metadata in {path}: {error}") from error
    return {}


def _metadata(file: Path) -> Any:
    """Parse one metadata file, refusing sizes and nesting no real metadata has."""
    size = file.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"{file} is {size} bytes; zarr metadata over {MAX_METADATA_BYTES} bytes is refused"
        )
    try:
        return json.loads(file.read_text())
    except RecursionError:
        raise ValueError(f"corrupt zarr metadata in {file}: nested too deeply") from None


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
        if not 0 < len(datasets) <= MAX_LEVELS:
            raise ValueError(
                f"corrupt OME-Zarr multiscales metadata in {path}: multiscales[0].datasets "
                f"lists {len(datasets)} levels (1 to {MAX_LEVELS} make sense)"
            )
        paths = [
            inner_path(path, dataset["path"], f"multiscales[0].datasets[{i}].path")
            for i, dataset in enumerate(datasets)
        ]
        shared = _transforms(path, multiscale, len(axes_metadata), "multiscales[0]")
        transforms = [
            _transforms(path, dataset, len(axes_metadata), f"multiscales[0].datasets[{i}]") + shared
            for i, dataset in enumerate(datasets)
        ]
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(f"corrupt OME-Zarr multiscales metadata in {path}: {error!r}") from error
    if version not in READ_VERSIONS:
        raise ValueError(
            f"{path} is OME-Zarr (NGFF) version {version}; napari-unet reads "
            f"{' and '.join(READ_VERSIONS)}"
        )
    return Multiscale(
        version,
        _axis_letters(axes_metadata, path),
        axes_metadata,
        paths,
        transforms,
        "image-label" in attributes,
    )


def inner_path(store: Path, text: Any, field: str) -> str:
    """Return ``text``, a path that metadata names, once it is known to stay inside ``store``.

    A store is data, not directions: absolute paths, ``..``, URLs, empty parts and links that
    lead out of the store are refused, with the store and the field named.
    """

    def refuse(reason: str) -> ValueError:
        return ValueError(
            f"{store}: {field} is {text!r}, {reason}; it must name a place inside the store"
        )

    if not isinstance(text, str) or not text.strip():
        raise refuse("not a path")
    if _URL.match(text) or "\\" in text or text.startswith("/"):
        raise refuse("a URL or an absolute path")
    if any(part in ("", ".", "..") for part in text.split("/")):
        raise refuse("a path with an empty, '.' or '..' part")
    if not _leads_inside(store / text, store.resolve()):
        raise refuse("a link that leads out of the store (or loops)")
    return text


def _leads_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, its links followed, is inside ``root`` (a link loop is not)."""
    try:
        return path.resolve().is_relative_to(root)
    except (RuntimeError, OSError):  # a loop: RuntimeError before Python 3.13, then OSError
        return False


def _transforms(store: Path, owner: dict[str, Any], n_axes: int, field: str) -> list[Any]:
    """Return ``owner``'s coordinate transformations once each is known to make sense."""
    transforms = owner.get("coordinateTransformations", [])
    if not isinstance(transforms, list):
        raise ValueError(f"{store}: {field}.coordinateTransformations is not a list")
    for j, transform in enumerate(transforms):
        where = f"{field}.coordinateTransformations[{j}]"
        kind = transform.get("type") if isinstance(transform, dict) else None
        if kind not in _TRANSFORM_KEYS or "path" in transform:
            raise ValueError(
                f"{store}: {where} must be a scale, translation or identity given inline, "
                f"not {transform!r}"
            )
        key = _TRANSFORM_KEYS[kind]
        if key is not None:
            _check_vector(store, f"{where}.{key}", transform.get(key), n_axes, key == "scale")
    return list(transforms)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _check_vector(store: Path, field: str, values: Any, n_axes: int, positive: bool) -> None:
    """One finite number per axis (and above zero for a scale), or a clear error."""
    numbers = isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
    sensible = numbers and all(_finite(v) and (v > 0 or not positive) for v in values)
    if not sensible or len(values) != n_axes:
        need = "positive finite numbers" if positive else "finite numbers"
        raise ValueError(f"{store}: {field} is {values!r}; it needs {n_axes} {need}, one per axis")


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
        if transform.get("type") == "scale":  # checked by read_multiscale: inline, positive
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
    path = Path(path)
    multiscale = read_multiscale(path)
    count = len(multiscale.paths)
    if not 0 <= level < count:
        raise ValueError(f"{path} has {count} resolution level(s) (0 to {count - 1}); no {level}")
    levels = _open_levels(path, multiscale)
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


def _open_levels(path: Path, multiscale: Multiscale) -> list[Any]:
    """Open every level lazily, once what its metadata declares is known to make sense.

    Nothing is read or allocated from a declared shape before it is checked: its axes, its
    size, its chunks, its place in the pyramid, and that the store holds enough of it.
    """
    import zarr

    held = _held_chunk_files(path, multiscale.paths)
    levels = []
    for i, one in enumerate(multiscale.paths):
        field = f"multiscales[0].datasets[{i}] ({one!r})"
        for name in _METADATA_FILES:
            if (path / one / name).is_file():
                _metadata(path / one / name)  # bounded before zarr parses it
        try:
            array = zarr.open_array(path / one, mode="r")
        except Exception as error:  # zarr raises many types on missing or corrupt arrays
            raise ValueError(f"cannot open the level {path}: {field}: {error!r}") from error
        _check_level(path, field, array, multiscale.axes, levels[-1] if levels else None)
        _check_held(path, field, array, held[one])
        levels.append(array)
    return levels


def _check_level(path: Path, field: str, array: Any, axes: str, finer: Any) -> None:
    """Check a level's declared dimensions, size and chunks, and its place in the pyramid."""
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    if array.ndim != len(axes):
        raise ValueError(
            f"{path}: {field} has {array.ndim} dimensions but the metadata names "
            f"{len(axes)} axes ({axes})"
        )
    if min(shape, default=0) < 1 or math.prod(shape) > MAX_DECLARED_PIXELS:
        raise ValueError(
            f"{path}: {field} declares the shape {shape}; every axis needs at least one pixel "
            f"and a level at most {MAX_DECLARED_PIXELS} pixels"
        )
    if min(chunks) < 1 or math.prod(chunks) * array.dtype.itemsize > MAX_CHUNK_BYTES:
        raise ValueError(
            f"{path}: {field} declares chunks {chunks} of {array.dtype}; a chunk must be "
            f"non-empty and at most {MAX_CHUNK_BYTES // 2**20} MB"
        )
    if finer is not None and any(n > m for n, m in zip(shape, finer.shape, strict=True)):
        raise ValueError(
            f"{path}: {field} declares the shape {shape}, larger than the finer level's "
            f"{tuple(finer.shape)}; a pyramid's levels only shrink"
        )


def _check_held(path: Path, field: str, array: Any, held: int) -> None:
    """Refuse a big level whose store holds almost none of the chunks it declares.

    Missing chunks read as the fill value, so a few kilobytes could declare an image that
    takes days to sample and segment; a real sparse image (empty chunks not written) holds
    far more than :data:`MIN_HELD_SHARE` of them.
    """
    pixels = math.prod(array.shape)
    grid = array.shards or array.chunks  # one file a shard when the array is sharded
    declared = math.prod(-(-n // c) for n, c in zip(array.shape, grid, strict=True))
    if pixels > SPARSE_CHECK_PIXELS and held < MIN_HELD_SHARE * declared:
        raise ValueError(
            f"{path}: {field} declares {pixels} pixels in {declared} chunk files (chunks, or "
            f"shards) but the store holds {held} of them; a level over {SPARSE_CHECK_PIXELS} "
            f"pixels must hold at least {MIN_HELD_SHARE:.0%} of its chunk files"
        )


def _held_chunk_files(store: Path, paths: list[str]) -> dict[str, int]:
    """Count the chunk files under each level's folder, refusing links that leave the store.

    One walk of the store's listing (no file is opened): its cost is what the store holds.
    """
    root = store.resolve()
    counts = dict.fromkeys(paths, 0)
    folders = [store]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_symlink() and not _leads_inside(Path(entry.path), root):
                    raise ValueError(
                        f"{store}: the link {Path(entry.path).relative_to(store)} leads out of "
                        f"the store (to {os.readlink(entry.path)}) or loops; a store's files "
                        "must be inside it"
                    )
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                elif entry.name not in _METADATA_FILES:
                    relative = Path(entry.path).relative_to(store).as_posix()
                    for one in paths:
                        if relative.startswith(one + "/"):
                            counts[one] += 1
    return counts


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
    if not isinstance(names, list):
        raise ValueError(f"{folder}: labels is {names!r}, not a list of names")
    for i, name in enumerate(names):
        if "/" in inner_path(folder, name, f"labels[{i}]"):
            raise ValueError(f"{folder}: labels[{i}] is {name!r}, not one name")
    return [folder / name for name in names if is_ome_zarr(folder / name)]


def check_write_place(path: str | os.PathLike[str], labels: bool) -> None:
    """Refuse to write at ``path`` if it lies inside an OME-Zarr image, at any depth.

    An image's pixels are no one's scratch space: the only place inside one that is written
    is ``<image>/labels/<name>`` (when ``labels``), and only if no level of the image lies
    there. Links are resolved first (the folders above ``path``; ``path`` itself is replaced,
    never followed), and must lead where the path seems to, so none redirects a write.
    """
    places = write_places(path)
    landing = places[-1]
    for place in places:
        for image in filter(_has_multiscales, place.parents):
            relative = place.relative_to(image)
            allowed = labels and is_labels_place(image, relative)
            if not allowed or image.resolve() / relative != landing:
                raise ValueError(
                    f"{path} lies inside the OME-Zarr image {image}; outputs go outside it, or "
                    f"(labels only) at {image / 'labels' / '<name>'}"
                )


def is_labels_place(image: Path, relative: Path) -> bool:
    """Whether ``image / relative`` is ``labels/<name>``, clear of every level of the image."""
    if len(relative.parts) != 2 or relative.parts[0] != "labels":
        return False
    try:
        levels = read_multiscale(image).paths
    except (ValueError, OSError):
        return False  # an image we cannot read is not written into
    place = relative.as_posix()
    return not any(
        level == place or level.startswith(place + "/") or place.startswith(level + "/")
        for level in levels
    )


def _has_multiscales(folder: Path) -> bool:
    try:
        return folder.is_dir() and "multiscales" in ome_attributes(folder)
    except (ValueError, OSError):
        return False


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
        self._new_folders = missing_folders(path.parent)
        self._chunks = chunks
        self._dtype = np.dtype(dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._group = zarr.open_group(
                self._partial, mode="w", zarr_format=_ZARR_FORMATS[layout.version]
            )
            # Level 0, all zeros: the labels are written here (segment(..., out=writer.array)).
            self.array = self._create_level(0)
        except BaseException:  # e.g. a full disk: not even the start is left behind
            self.discard()
            raise

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

    def finish(self, provenance: dict[str, Any] | None = None) -> list[Any]:
        """Build the pyramid, write the metadata, move the result into place; return its levels.

        ``provenance`` (which model and options made the labels) is kept in the label
        image's attributes under ``"napari_unet"``.
        """
        previous = self.array
        for level in range(1, len(self.layout.shapes)):
            current = self._create_level(level)
            downsample_into(previous, current)
            previous = current
        self._write_metadata()
        if provenance is not None:
            self._group.attrs["napari_unet"] = provenance
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
        """Rename the finished result into place; what it replaces is put back if that fails.

        A link at the path is replaced, never followed: the data it points at stays.
        """
        if not os.path.lexists(self.path):
            os.replace(self._partial, self.path)
            return
        if not self.overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
        old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(self.path, old)
        try:
            os.replace(self._partial, self.path)
        except BaseException:
            os.replace(old, self.path)
            raise
        _remove(old)

    def discard(self) -> None:
        """Delete the unfinished result, and the folders made for it if they stayed empty."""
        shutil.rmtree(self._partial, ignore_errors=True)
        remove_empty(self._new_folders)

    def __enter__(self) -> LabelsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.finished:
            self.discard()


def _remove(path: Path) -> None:
    """Delete a replaced result: a link only as a link, a folder with what it holds."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


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
    check_write_place(path, labels=True)
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
