"""Where a prediction's result goes on disk, written block by block as the engine makes it.

An OME-Zarr output is the engine's ``out`` itself (level 0 of a label image, its pyramid built
at the end). A TIFF output is predicted into a temporary zarr array beside it and then
streamed into the TIFF tile by tile, so neither holds an image-sized array in memory; without
zarr installed, the result is held in memory and written in one call. Nothing is left at the
output path unless the whole result was written.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.io.files import new_folders_removed_on_failure
from napari_unet.core.io.image_file import default_chunks
from napari_unet.core.io.images import write_image, write_labels
from napari_unet.core.provenance import write_sidecar

OBJECT_DTYPE = np.dtype(np.uint32)
"""Object labels are written in this dtype: wide enough that blocks number objects in place."""


def result_dtype(kind: str) -> np.dtype:
    """Return the dtype a result of ``kind`` is allocated in (float32, uint8 classes, objects)."""
    return np.dtype({"probabilities": np.float32, "semantic": np.uint8}.get(kind, OBJECT_DTYPE))


class ResultFile:
    """An output being written: pass :attr:`array` as ``out``, then :meth:`save` the result."""

    def __init__(self, array: Any, save: Any) -> None:
        self.array = array
        """Where the engine writes (``None``: the engine returns the result in memory)."""
        self._save = save

    def save(self, result: Any, provenance: dict[str, Any] | None = None) -> Path:
        """Finish the file from ``result`` (what the engine returned), with its provenance.

        ``provenance`` (:func:`~napari_unet.core.provenance.provenance_record`) goes into an
        OME-Zarr's attributes, or beside a TIFF as ``<file>.json``.
        """
        return self._save(result, provenance)


@contextlib.contextmanager
def result_file(
    path: str | Path,
    shape: tuple[int, ...],
    axes: str,
    kind: str,
    pixel_size_um: dict[str, float] | None,
    overwrite: bool,
) -> Iterator[ResultFile]:
    """Open ``path`` (``.tif`` or OME-Zarr) for a result of ``shape`` and ``axes``.

    ``kind`` is ``"instances"``, ``"semantic"`` or ``"probabilities"`` (``axes`` then start
    with C). Leaving the block with an error leaves nothing at ``path``.
    """
    from napari_unet.core.io import omezarr

    path = Path(path)
    dtype = result_dtype(kind)
    if omezarr.is_zarr_path(path):
        with omezarr.create_labels(
            path, shape, axes, pixel_size_um=pixel_size_um, dtype=dtype, overwrite=overwrite
        ) as writer:

            def save_zarr(_: Any, provenance: dict[str, Any] | None) -> Path:
                writer.finish(provenance)  # the engine wrote level 0 already
                return path

            yield ResultFile(writer.array, save_zarr)
        return

    def save_tiff(result: Any, provenance: dict[str, Any] | None) -> Path:
        write = write_image if kind == "probabilities" else write_labels
        written = write(path, result, axes, pixel_size_um, overwrite=overwrite)
        if provenance is not None:
            write_sidecar(written, provenance)
        return written

    omezarr.check_write_place(path, labels=False)  # before the work, not only at its end
    try:
        import zarr
    except ImportError:  # without the zarr extra: in memory, one write
        yield ResultFile(None, save_tiff)
        return
    with new_folders_removed_on_failure([path]):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
            chunks = default_chunks(shape, axes, whole_channels=True, planes=True)
            array = zarr.create_array(
                store=folder, shape=shape, chunks=chunks, dtype=dtype, fill_value=0
            )
            yield ResultFile(array, save_tiff)
