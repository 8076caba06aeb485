"""What a TIFF file claims, checked against what it can hold before anything is allocated.

File metadata is untrusted: a 5 KB file may declare a million planes, strips past its end or
a pixel size of 1e300 m. Building tifffile's series for such a claim alone takes minutes and
gigabytes, so the OME-XML and ImageJ claims are checked first, from the first page's
description; then every strip against the end of its file, and the series, one page and
one tile against the file size (allowing for the most a known codec can expand) and free
memory. Every refusal is one line naming the claim. Pixel sizes that cannot be real are
dropped with a warning instead, and the pixels are still read.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core.memory import available_ram_bytes

MIN_IFD_BYTES = 54
"""Smallest directory (IFD) one image plane needs: 4 tags of 12 bytes plus count and link."""
MEMORY_SHARE = 0.8
"""An eager read may take at most this share of the free RAM."""
PIXEL_SIZE_RANGE_UM = (1e-5, 1e5)
"""Pixel sizes outside 0.01 nm to 10 cm are taken as broken metadata, not as physics."""

_C = tifffile.COMPRESSION
MAX_EXPANSION = {
    _C.NONE: 1,
    _C.PACKBITS: 64,
    _C.LZW: 4096,
    _C.ADOBE_DEFLATE: 1032,
    _C.DEFLATE: 1032,
    _C.ZSTD: 65536,
}
"""The most one stored byte can decode to, per codec, with a margin (deflate: 1032; zstd: a
4-byte run-length block per 128 KB). Other codecs are bounded by free memory only."""
_DTYPE_BITS = {"int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int32": 32, "uint32": 32}
_DTYPE_BITS |= {"float": 32, "double": 64, "bit": 1, "complex": 64, "double-complex": 128}


class FileClaimError(ValueError):
    """A file declares more than it can hold (or than memory can hold)."""


def check_declared_planes(tiff: tifffile.TiffFile, path: Path) -> None:
    """Refuse OME-XML or ImageJ plane counts the file cannot hold; call before ``tiff.series``."""
    try:
        page = tiff.pages[0]
    except IndexError:
        return  # no image at all: the reader says so
    if tiff.is_ome and page.description:
        try:
            root = ElementTree.fromstring(page.description)
        except ElementTree.ParseError:
            return  # tifffile then reads the pages as they are
        budget = path.stat().st_size + _companion_bytes(root, path)
        for claim, planes, plane_bytes in _ome_claims(root):
            # In an OME-TIFF every plane has its own directory (IFD).
            _check_planes(claim, planes, plane_bytes, budget // MIN_IFD_BYTES, budget, page)
    elif tiff.is_imagej:
        metadata = tiff.imagej_metadata or {}
        keys = [key for key in ("images", "channels", "slices", "frames") if key in metadata]
        claim = "ImageJ " + ", ".join(f"{key}={metadata[key]}" for key in keys)
        planes = _count(metadata.get("images", 1))
        plane_bytes = _page_layout(page).stored_bytes
        budget = path.stat().st_size
        # Uncompressed ImageJ stacks store all planes after one directory.
        most = None if page.compression == _C.NONE else budget // MIN_IFD_BYTES
        if planes is not None:
            _check_planes(claim, planes, plane_bytes, most, budget, page)


def check_series(series: Any, lazy: bool) -> None:
    """Refuse a series whose pixels could not come from this file, or not fit in memory.

    What a file must hold is counted as stored: bits per sample, not bytes per pixel (a
    1-bit mask holds 8 pixels a byte, 12-bit samples 2 in 3 bytes). Reading decodes a
    compressed file one page or tile at a time, so each of those must fit in memory too,
    lazy or not; uncompressed files are memory-mapped instead.
    """
    itemsize = np.dtype(series.dtype).itemsize
    in_memory = math.prod(series.shape) * itemsize
    frames = [frame for frame in series.pages if frame is not None]
    for number, frame in enumerate(frames):
        _check_strips(frame, number)
    files = {id(frame.parent): frame.parent.filehandle.size for frame in frames}
    page = series.keyframe
    budget = sum(files.values()) or page.parent.filehandle.size  # all files of a multi-file OME
    most = budget * MAX_EXPANSION.get(page.compression, math.inf)
    free = available_ram_bytes() * MEMORY_SHARE
    pages = math.prod(series.shape) // max(1, math.prod(page.shape))
    stored = pages * _page_layout(page).stored_bytes
    what = f"shape {tuple(series.shape)} {series.dtype}"
    if stored > most:
        raise FileClaimError(
            f"it claims {what} ({_size(stored)} at {page.bitspersample} bit(s) per sample), "
            f"more than a file of {_size(budget)} can hold ({page.compression.name} "
            "compression); the file is truncated or its metadata wrong"
        )
    _check_chunk(page, most, budget, free, itemsize)
    if not lazy and in_memory > free:
        raise FileClaimError(
            f"reading it ({what} ({_size(in_memory)})) would need more memory than is free "
            f"({_size(free)}); open it lazily (lazy=True) to read it tile by tile"
        )


@dataclass(frozen=True)
class _Chunk:
    """What a read decodes at once (a whole page, or one tile) as rows of samples."""

    name: str
    rows: int
    width: int
    samples: int
    """Samples per pixel within a row (1 when samples are stored in separate planes)."""
    bits: int

    @property
    def stored_bytes(self) -> int:
        """Bytes as a codec decodes them: each row padded to whole bytes, as TIFF stores it."""
        return self.rows * math.ceil(self.width * self.samples * self.bits / 8)

    def memory_bytes(self, itemsize: int) -> int:
        """Bytes once unpacked into an array of ``itemsize`` bytes per sample."""
        return self.rows * self.width * self.samples * itemsize


def _page_layout(page: Any) -> _Chunk:
    """Describe a whole page as rows; samples stored in separate planes are rows of their own."""
    planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    rows = page.imagedepth * page.imagelength * (page.samplesperpixel if planar else 1)
    samples = 1 if planar else page.samplesperpixel
    return _Chunk(
        f"pages of shape {page.shape}", rows, page.imagewidth, samples, page.bitspersample
    )


def _decoded_chunk(page: Any) -> _Chunk:
    """Return what a read decodes at once: a tile of a tiled page, else the whole page."""
    if not page.is_tiled:
        return _page_layout(page)
    planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    return _Chunk(
        f"tiles of {page.tilelength} x {page.tilewidth} pixels",
        page.tiledepth * page.tilelength,
        page.tilewidth,
        1 if planar else page.samplesperpixel,
        page.bitspersample,
    )


def _check_chunk(page: Any, most: float, budget: int, free: float, itemsize: int) -> None:
    """Refuse a page or tile that the file cannot hold, or (compressed) memory cannot."""
    chunk = _decoded_chunk(page)
    if chunk.stored_bytes > most:
        raise FileClaimError(
            f"it claims {chunk.name} ({_size(chunk.stored_bytes)} each), more than a file of "
            f"{_size(budget)} can hold"
        )
    memory = chunk.memory_bytes(itemsize)
    if page.compression != _C.NONE and memory > free:  # uncompressed files are mapped
        raise FileClaimError(f"it claims {chunk.name} ({_size(memory)} each), more than is free")


def checked_pixel_sizes(sizes: dict[str, float], path: Path) -> dict[str, float]:
    """Keep finite pixel sizes within :data:`PIXEL_SIZE_RANGE_UM`; warn about the others."""
    low, high = PIXEL_SIZE_RANGE_UM
    kept = {}
    for axis, size in sizes.items():
        if low <= size <= high:
            kept[axis] = size
        else:
            warnings.warn(
                f"{path.name}: ignoring pixel size {axis} = {size:g} µm (not a size between "
                f"{low:g} and {high:g} µm); the pixels are still read",
                UserWarning,
                stacklevel=3,
            )
    return kept


def number(text: Any) -> float:
    """Parse a metadata value as a float; NaN (later dropped with a warning) if it is not one."""
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _check_planes(
    claim: str,
    planes: int,
    plane_bytes: int,
    most: int | None,
    budget: int,
    page: Any,
) -> None:
    expansion = MAX_EXPANSION.get(page.compression)
    too_many = most is not None and planes > most
    too_big = expansion is not None and planes * plane_bytes > budget * expansion
    if too_many or too_big:
        raise FileClaimError(
            f"it claims {claim} ({planes:,} planes, {_size(planes * plane_bytes)}), "
            f"more than a file of {_size(budget)} can hold; its metadata is wrong or the file "
            "is truncated"
        )


def _check_strips(frame: Any, number: int) -> None:
    offsets, counts = frame.dataoffsets, frame.databytecounts
    file_size = frame.parent.filehandle.size
    for offset, count in zip(offsets, counts, strict=False):
        if offset + count > file_size:
            raise FileClaimError(
                f"page {number} claims {count:,} bytes of pixels at offset "
                f"{offset:,}, past the end of the file ({file_size:,} bytes); it is truncated "
                "or corrupt"
            )


def _ome_claims(root: ElementTree.Element) -> list[tuple[str, int, int]]:
    """``(claim, planes, bytes per plane)`` for each image the OME-XML declares."""
    claims = []
    for pixels in (e for e in root.iter() if _tag(e) == "Pixels"):
        sizes = {axis: _count(pixels.get(f"Size{axis}", 1)) for axis in "XYZCT"}
        channel = next((e for e in pixels if _tag(e) == "Channel"), None)
        samples = _count(channel.get("SamplesPerPixel", 1)) if channel is not None else 1
        if None in sizes.values() or not samples:
            continue  # unparsable: tifffile rejects or ignores it
        planes = sizes["Z"] * sizes["T"] * max(1, sizes["C"] // samples)
        bits = _DTYPE_BITS.get(str(pixels.get("Type", "uint8")).lower(), 8)
        claim = "OME " + " ".join(f"Size{axis}={sizes[axis]}" for axis in "XYZCT")
        row_bytes = math.ceil(sizes["X"] * samples * bits / 8)  # rows are padded to bytes
        claims.append((claim, planes, sizes["Y"] * row_bytes))
    return claims


def _companion_bytes(root: ElementTree.Element, path: Path) -> int:
    """Bytes of the other files of a multi-file OME-TIFF that exist beside this one."""
    names = {e.get("FileName") for e in root.iter() if _tag(e) == "UUID"} - {None, path.name}
    siblings = (path.parent / Path(str(name)).name for name in names)
    return sum(sibling.stat().st_size for sibling in siblings if sibling.is_file())


def _tag(element: ElementTree.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _count(text: Any) -> int | None:
    """Return a non-negative integer from metadata, or None when it is not one."""
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _size(n_bytes: float) -> str:
    """``4.7 KB``, ``7.3 GB``: sizes in messages."""
    if n_bytes < 1000:
        return f"{n_bytes:.0f} bytes"
    exponent = min(int(math.log10(n_bytes) // 3), 6)
    return f"{n_bytes / 1000**exponent:.1f} {' KMGTPE'[exponent]}B"
