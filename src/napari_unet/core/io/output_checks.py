"""Checks made before a run, so that no work is lost at its end and no input is harmed.

:func:`check_outputs` refuses outputs that would replace an input (compared as resolved files,
not names), lie inside an input store (but an OME-Zarr image's ``labels/<name>``), or go where
nothing can be written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from napari_unet.core.io.files import already_exists, write_places
from napari_unet.core.io.omezarr import is_labels_place, is_ome_zarr
from napari_unet.names import ZARR_SUFFIX


def check_outputs(inputs: Sequence[Path], outputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse, before any work, outputs that cannot or must not be written.

    An output that is one of the inputs (same resolved path or same file through a link), a
    folder holding one, or a place inside an input store (but an OME-Zarr image's
    ``labels/<name>``) is refused even with ``overwrite``; so are two outputs of one name,
    existing outputs without ``overwrite``, and folders where no file can be created.
    """
    sources = [Path(path).resolve() for path in inputs]
    # Each input under every name that reaches it: its path, its file (links) and its folders.
    reaches: dict[object, Path] = {source: source for source in sources}
    reaches |= {_identity(source): source for source in sources if source.exists()}
    reaches |= {folder: source for source in sources for folder in source.parents}
    stores = [source for source in sources if source.is_dir()]
    seen: set[Path] = set()
    for output in outputs:
        target = Path(output).resolve()
        source = reaches.get(target) or reaches.get(_identity(target))
        if source is not None:
            raise ValueError(
                f"output {output} would replace the input {source}; choose another output"
            )
        _refuse_inside(Path(output), target, stores)
        if target.is_dir() and target.suffix.lower() != ZARR_SUFFIX and not is_ome_zarr(target):
            raise IsADirectoryError(f"output {output} is a folder, not an image file")
        if target in seen:
            raise ValueError(
                f"two inputs would be written to {output}; give them separate output folders"
            )
        seen.add(target)
    existing = [str(path) for path in outputs if os.path.lexists(path)]
    if existing and not overwrite:
        raise already_exists(", ".join(existing))
    for folder in sorted({Path(path).parent for path in outputs}):
        _check_writable(folder)


def _refuse_inside(output: Path, target: Path, stores: Sequence[Path]) -> None:
    """Refuse an output inside an input store (an OME-Zarr folder), at any depth.

    ``target`` is the output with every link resolved; the output's own name is checked as
    typed too (its folders resolved), since a link there is replaced, not followed. The one
    place inside an input that is written is an image's ``labels/<name>``.
    """
    for place in {target, write_places(output)[-1]}:
        for store in stores:
            if place.is_relative_to(store):
                if not is_labels_place(store, place.relative_to(store)):
                    raise ValueError(
                        f"output {output} lies inside the input {store}; choose a place "
                        f"outside it (labels of an OME-Zarr image go to {store}/labels/<name>)"
                    )


def _check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise type(error)(f"cannot write outputs in {folder}: {reason}") from error


def _identity(path: Path) -> tuple[int, int] | None:
    """Device and inode: one file under any name (hard links too); None if there is none yet."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino
