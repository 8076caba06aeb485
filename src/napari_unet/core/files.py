"""Safe output files: atomic writes, exclusive creation, and checks made before any work.

A write goes to a temporary file in the target's folder that is renamed into place when
complete, so an interrupted or failed write never leaves a partial file and readers see the
old file or the new one. Without ``overwrite`` the rename is a hard link, which fails if the
name was taken meanwhile: two runs racing for one output cannot both succeed. Before a run,
:func:`check_outputs` refuses outputs that would replace an input (compared as resolved
files, not names) and places that cannot be written, so no work is lost at the end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from napari_unet.names import ZARR_SUFFIX


def atomic_write(target: Path, write: Callable[[str], object], overwrite: bool = True) -> None:
    """Call ``write(temporary_path)``, then move the file to ``target`` with normal permissions.

    ``overwrite=False`` refuses (``FileExistsError``) if ``target`` exists when the file is
    moved into place, even if another process created it during the write.
    """
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes files private (0600)
        if overwrite:
            os.replace(temporary, target)
        else:
            _move_exclusively(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def check_outputs(inputs: Sequence[Path], outputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse, before any work, outputs that cannot or must not be written.

    An output that is one of the inputs (same resolved path or same file through a link), a
    folder holding one, or a place inside an input store (but an OME-Zarr image's
    ``labels/<name>``) is refused even with ``overwrite``; so are two outputs of one name,
    existing outputs without ``overwrite``, and folders where no file can be created.
    """
    from napari_unet.core.omezarr import is_ome_zarr  # a label image: labels/<name>

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
        raise _exists(", ".join(existing))
    for folder in sorted({Path(path).parent for path in outputs}):
        _check_writable(folder)


def _refuse_inside(output: Path, target: Path, stores: Sequence[Path]) -> None:
    """Refuse an output inside an input store (an OME-Zarr folder), at any depth.

    ``target`` is the output with every link resolved; the output's own name is checked as
    typed too (its folders resolved), since a link there is replaced, not followed. The one
    place inside an input that is written is an image's ``labels/<name>``.
    """
    from napari_unet.core.omezarr import is_labels_place

    typed = Path(os.path.abspath(output))
    for place in {target, typed.parent.resolve() / typed.name}:
        for store in stores:
            if place.is_relative_to(store):
                if not is_labels_place(store, place.relative_to(store)):
                    raise ValueError(
                        f"output {output} lies inside the input {store}; choose a place "
                        f"outside it (labels of an OME-Zarr image go to {store}/labels/<name>)"
                    )


@contextlib.contextmanager
def new_folders_removed_on_failure(outputs: Sequence[Path]) -> Iterator[None]:
    """On an error in the block, remove the outputs' folders that it created and left empty.

    Folders that existed before, and any folder holding a file (a finished output), stay.
    """
    new = [folder for output in outputs for folder in missing_folders(Path(output).parent)]
    try:
        yield
    except BaseException:
        remove_empty(new)
        raise


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove those of ``folders`` that are empty, deepest first; keep any that hold a file."""
    for folder in sorted(set(folders), key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty, or gone: keep it as it is
            folder.rmdir()


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


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


def _move_exclusively(temporary: str, target: Path) -> None:
    try:
        os.link(temporary, target)  # atomic, and fails if the name is taken
    except FileExistsError:
        raise _exists(target) from None
    except OSError:  # no hard links on this file system (FAT, some network shares)
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # claim the name
        except FileExistsError:
            raise _exists(target) from None
        os.replace(temporary, target)


def _exists(target: Path | str) -> FileExistsError:
    return FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
