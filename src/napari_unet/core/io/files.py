"""Safe output files: atomic writes, exclusive creation, folders removed after a failure.

A write goes to a temporary file in the target's folder that is renamed into place when
complete, so an interrupted or failed write never leaves a partial file and readers see the
old file or the new one. Without ``overwrite`` the rename is a hard link, which fails if the
name was taken meanwhile: two runs racing for one output cannot both succeed. The checks
made before a run are in :mod:`napari_unet.core.io.output_checks`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path


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


def _move_exclusively(temporary: str, target: Path) -> None:
    try:
        os.link(temporary, target)  # atomic, and fails if the name is taken
    except FileExistsError:
        raise already_exists(target) from None
    except OSError:  # no hard links on this file system (FAT, some network shares)
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # claim the name
        except FileExistsError:
            raise already_exists(target) from None
        os.replace(temporary, target)


def write_places(path: str | os.PathLike[str]) -> tuple[Path, ...]:
    """Where a write at ``path`` lands: as typed, and with the folders above it resolved.

    ``path`` itself is replaced, never followed, so only the links above it redirect a write;
    both names are checked against places no output may go (once when no link is involved).
    """
    typed = Path(os.path.abspath(path))
    return tuple(dict.fromkeys((typed, typed.parent.resolve() / typed.name)))


def already_exists(target: Path | str) -> FileExistsError:
    """Return the error for an output that exists and may not be replaced."""
    return FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
