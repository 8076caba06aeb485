"""Open a bioimage.io package as untrusted input: bounded, local, and closed on itself.

A package is a zip (or folder) of YAML and weights from anywhere, so nothing in it is
trusted before it is checked: zip members for their names and their declared and real sizes
(streamed with a cap, never a bomb's worth of bytes), ``rdf.yaml`` for its size and for the
nodes its YAML aliases expand to (a few kilobytes can expand to billions), every file it names
for being a relative path inside the package, never a URL (napari-unet never downloads at run
time) and, where the package declares one, for its sha256. ``bioimageio.spec`` is handed the
checked content with a local root and its file I/O checks off, so it never fetches anything.
"""

from __future__ import annotations

import hashlib
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from napari_unet.core.bioimageio import RDF_NAMES, looks_like_url

MAX_RDF_BYTES = 2**17
"""An ``rdf.yaml`` is a few kilobytes; a larger one is not parsed (pure-Python YAML reads
about 100 kB a second)."""
MAX_YAML_NODES = 100_000
"""YAML nodes after alias expansion: ~100 times a large real description."""
MAX_YAML_DEPTH = 64
"""Nesting of the YAML tree (after expansion): real descriptions nest about 8 deep."""
MAX_MEMBERS = 10_000
"""Zip members: a package holds a few dozen files."""
MAX_PACKAGE_BYTES = 2**31
"""Uncompressed bytes of a package (all its files), and of any one file it names: 2 GiB."""
CHUNK_BYTES = 2**20
BRACKETS = re.compile(r"[\[\]{}]")
FILE_KEYS = frozenset(
    {
        "source",  # 0.5: weights, tensors, attachments, architecture, documentation, covers
        "documentation",
        "covers",
        "test_tensor",
        "sample_tensor",
        "test_inputs",  # 0.4
        "test_outputs",
        "sample_inputs",
        "sample_outputs",
        "files",
        "architecture",
        "dependencies",
    }
)
"""Description fields that name files (in format 0.5 and 0.4); ``config`` is the tools' own."""


class PackageError(ValueError):
    """A package refused before it is trusted: the message names the package and the field."""


@dataclass(frozen=True)
class CheckedPackage:
    """A package whose description is parsed and whose file references are all local."""

    source: str
    root: Path
    rdf_name: str
    content: dict[str, Any]

    hashes: dict[str, set[str]]
    """The sha256 the raw description declares per file (a format conversion may drop them)."""

    def local_path(self, file: Any, field: str) -> Path:
        """Return the package file a description entry names, checked against its sha256."""
        path, declared = self._declared(file, field)
        if declared:
            self._check_sha256(path, field, declared, _sha256(path))
        return path

    def read(self, file: Any, field: str) -> bytes:
        """Read a package file (see :meth:`local_path`), hashing the bytes read, not the file."""
        path, declared = self._declared(file, field)
        data = path.read_bytes()
        if declared:
            self._check_sha256(path, field, declared, hashlib.sha256(data).hexdigest())
        return data

    def _declared(self, file: Any, field: str) -> tuple[Path, set[str]]:
        """Return the package file an entry names and the sha256 values declared for it."""
        relative = _relative_source(file, field, self.source)
        path = self._inside(relative, field)
        declared = set(self.hashes.get(str(PurePosixPath(relative)), ()))
        if getattr(file, "sha256", None) is not None:
            declared.add(str(file.sha256).lower())
        return path, declared

    def _check_sha256(self, path: Path, field: str, declared: set[str], actual: str) -> None:
        for expected in declared - {actual}:
            raise PackageError(
                f"{self.source}: {field} ({path.name}) does not match its sha256: the "
                f"package declares {expected[:12]}..., the file hashes to "
                f"{actual[:12]}...; it was changed or damaged after packaging"
            )

    def _inside(self, relative: str, field: str) -> Path:
        """Return an existing package file of bounded size (see :meth:`resolved`)."""
        path = self.resolved(relative, field)
        if not path.is_file():
            raise PackageError(f"{self.source}: {field} names {relative}, not in the package")
        if path.stat().st_size > MAX_PACKAGE_BYTES:
            raise PackageError(
                f"{self.source}: {field} ({relative}) is over {MAX_PACKAGE_BYTES >> 30} GiB"
            )
        return path

    def resolved(self, relative: str, field: str) -> Path:
        """Resolve ``relative`` under the root, links included, refusing what leaves it."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise PackageError(
                f"{self.source}: {field} ({relative}) leads outside the package (a link?); "
                "a package's files must be inside it"
            )
        return path


@contextmanager
def checked_package(source: Any) -> Iterator[CheckedPackage]:
    """Open ``source`` (a ``.zip``, a folder or its YAML file) with every check of this module.

    A zip is extracted, checked member by member, into a temporary folder that lives as long
    as the context: load everything needed inside it.
    """
    label = str(source)
    if looks_like_url(label):
        raise PackageError(
            f"{label} is a URL; napari-unet never downloads at run time. Download the package "
            "yourself (e.g. from bioimage.io) and load the local .zip"
        )
    path = Path(source).expanduser()
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="napari-unet-package-") as tmp:
            root = Path(tmp)
            _extract(path, root, label)
            yield _checked(label, root, _rdf_name(root, label))
    elif path.is_dir():
        yield _checked(label, path, _rdf_name(path, label))
    elif path.is_file():
        yield _checked(label, path.parent, path.name)
    else:
        raise PackageError(f"{label} is not a local file or folder")


def _checked(label: str, root: Path, rdf_name: str) -> CheckedPackage:
    content = read_rdf(root / rdf_name, label)
    package = CheckedPackage(label, root, rdf_name, content, declared_hashes(content))
    for field, value in file_references(package.content):
        relative = _local_reference(field, value, label)
        if relative is not None:
            package.resolved(relative, field)  # existence is checked when a file is read
    return package


def declared_hashes(tree: Any) -> dict[str, set[str]]:
    """Map each file that an entry ``{source: ..., sha256: ...}`` names to its hashes."""
    hashes: dict[str, set[str]] = {}
    if isinstance(tree, dict):
        source, sha = tree.get("source"), tree.get("sha256")
        if isinstance(source, str) and isinstance(sha, str):
            path = str(PurePosixPath(source.strip().replace("\\", "/")))
            hashes.setdefault(path, set()).add(sha.strip().lower())
        children = tree.values()
    else:
        children = tree if isinstance(tree, list) else []
    for child in children:
        for path, found in declared_hashes(child).items():
            hashes.setdefault(path, set()).update(found)
    return hashes


def _rdf_name(root: Path, label: str) -> str:
    for name in RDF_NAMES:
        if (root / name).is_file():
            return name
    raise PackageError(f"{label} has no {' or '.join(RDF_NAMES)} at its top level")


# --- zip members ---------------------------------------------------------------------------


def _extract(archive: Path, folder: Path, label: str) -> None:
    """Extract ``archive`` into ``folder`` after checking every member; stream with caps."""
    try:
        with zipfile.ZipFile(archive) as package:
            members = package.infolist()
            names = _checked_members(members, label)
            for member, name in zip(members, names, strict=True):
                target = folder / name
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _stream(package, member, target, label)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        raise PackageError(f"{label} is not a readable zip: {error}") from error
    except OSError as error:  # e.g. a member both a file and a folder, or a full disk
        raise PackageError(f"{label} cannot be unpacked to a temporary folder: {error}") from error


def _checked_members(members: list[zipfile.ZipInfo], label: str) -> list[str]:
    """Check names, kinds and declared sizes of all members before extracting one."""
    if len(members) > MAX_MEMBERS:
        raise PackageError(f"{label} has {len(members)} members; a package has a few dozen")
    names, seen, declared = [], set(), 0
    for member in members:
        name = member_name(member.filename, label)
        mode = member.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise PackageError(f"{label}: member {member.filename!r} is a symbolic link")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise PackageError(f"{label}: member {member.filename!r} is not a file or folder")
        if member.flag_bits & 0x1:
            raise PackageError(f"{label}: member {member.filename!r} is encrypted")
        if name.casefold() in seen:
            raise PackageError(f"{label}: member {member.filename!r} appears twice")
        seen.add(name.casefold())
        declared += member.file_size
        if declared > MAX_PACKAGE_BYTES:
            raise PackageError(
                f"{label} declares over {MAX_PACKAGE_BYTES >> 30} GiB of files "
                f"(at {member.filename!r}); napari-unet does not unpack it"
            )
        names.append(name)
    return names


def member_name(raw: str, label: str) -> str:
    """Return a member's path relative to the package, refusing any that leaves it."""
    name = raw.replace("\\", "/")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if (
        name.startswith("/")
        or PureWindowsPath(raw).drive
        or ".." in parts
        or "\x00" in name
        or not parts
    ):
        raise PackageError(f"{label}: member {raw!r} would land outside the package")
    return "/".join(parts)


def _stream(package: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, label: str) -> None:
    """Copy one member in chunks, stopping as soon as it holds more than it declares."""
    written = 0
    with package.open(member) as source, target.open("xb") as out:
        while chunk := source.read(CHUNK_BYTES):
            written += len(chunk)
            if written > member.file_size:
                raise PackageError(
                    f"{label}: member {member.filename!r} holds more than its declared "
                    f"{member.file_size} bytes (a zip bomb?)"
                )
            out.write(chunk)
    if written != member.file_size:
        raise PackageError(
            f"{label}: member {member.filename!r} holds {written} bytes, not its declared "
            f"{member.file_size}"
        )


# --- rdf.yaml ------------------------------------------------------------------------------


def read_rdf(path: Path, label: str) -> dict[str, Any]:
    """Parse a description, refusing large files and YAML whose aliases expand too far."""
    from ruyaml import YAML
    from ruyaml.error import YAMLError

    size = path.stat().st_size
    if size > MAX_RDF_BYTES:
        raise PackageError(
            f"{label}: {path.name} is {size} bytes; a description is at most "
            f"{MAX_RDF_BYTES >> 10} KiB"
        )
    yaml = YAML(typ="safe", pure=True)  # the parser and constructor bioimageio.spec uses
    try:
        text = path.read_text(encoding="utf-8")
        if _bracket_depth(text) > MAX_YAML_DEPTH:  # the parser would take seconds to say so
            raise PackageError(f"{label}: {path.name} nests deeper than {MAX_YAML_DEPTH} levels")
        tree = yaml.compose(text)  # nodes only: an alias is a shared node, not a copy
    except RecursionError:
        raise PackageError(f"{label}: {path.name} nests deeper than YAML can be read") from None
    except (UnicodeDecodeError, YAMLError) as error:
        raise PackageError(f"{label}: {path.name} is not readable YAML: {error}") from error
    if tree is None:
        raise PackageError(f"{label}: {path.name} is empty")
    check_yaml_tree(tree, f"{label}: {path.name}")
    content = yaml.constructor.construct_document(tree)
    if not isinstance(content, dict):
        raise PackageError(f"{label}: {path.name} is not a YAML mapping")
    return content


def _bracket_depth(text: str) -> int:
    """Return the deepest nesting of ``[`` and ``{`` (counting those in strings too)."""
    depth = deepest = 0
    for match in BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def check_yaml_tree(tree: Any, label: str) -> None:
    """Refuse a YAML node graph too large or too deep once its aliases are expanded."""
    _expanded(tree, 1, {}, label)


def _expanded(node: Any, depth: int, known: dict[int, tuple[int, int]], label: str) -> int:
    """Return the node's expanded size; ``known`` memoises (size, height) per shared node.

    Memoising keeps the walk linear in the document; an alias cycle never finishes a node,
    so it runs into the depth limit.
    """
    if id(node) in known:
        size, height = known[id(node)]
    else:
        children = _children(node)
        if depth > MAX_YAML_DEPTH:
            raise PackageError(
                f"{label} nests deeper than {MAX_YAML_DEPTH} levels (an alias loop?)"
            )
        size, height = 1, 1
        for child in children:
            size += _expanded(child, depth + 1, known, label)
            height = max(height, 1 + known[id(child)][1])
            if size > MAX_YAML_NODES:
                raise PackageError(
                    f"{label} expands to over {MAX_YAML_NODES} YAML nodes through its "
                    "aliases (a 'billion laughs'?)"
                )
        known[id(node)] = (size, height)
    if depth + height - 1 > MAX_YAML_DEPTH:
        raise PackageError(f"{label} nests deeper than {MAX_YAML_DEPTH} levels")
    return size


def _children(node: Any) -> list[Any]:
    value = node.value
    if not isinstance(value, list):
        return []
    if value and isinstance(value[0], tuple):  # a mapping: (key, value) pairs
        return [item for pair in value for item in pair]
    return value


# --- file references -----------------------------------------------------------------------


def file_references(tree: Any, field: str = "", is_file: bool = False) -> Iterator[tuple[str, str]]:
    """Yield ``(field, text)`` for every string the description gives as a file."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not (field == "" and key == "config"):
                yield from file_references(value, f"{field}.{key}".lstrip("."), key in FILE_KEYS)
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from file_references(item, f"{field}[{index}]", is_file)
    elif isinstance(tree, str) and is_file:
        yield field, tree


def _local_reference(field: str, value: str, label: str) -> str | None:
    """Return the package path ``value`` names, or ``None`` for an importable name.

    A URL, an absolute path and a path climbing out with ``..`` are refused.
    """
    text = value.strip()
    if looks_like_url(text):
        raise PackageError(
            f"{label}: {field} is the URL {text}; napari-unet never downloads at run time. "
            "Download the file yourself and put it into the package (its name, relative to "
            "the rdf.yaml, in place of the URL), or point the field to your local copy inside "
            "the package"
        )
    if field.endswith("architecture"):  # format 0.4: "file.py:Class" or "module.Class"
        if ".py:" not in text:
            return None
        text = text.rsplit(":", 1)[0]
    if field.endswith("dependencies"):
        text = text.split(":", 1)[-1]  # "conda:environment.yaml"
    posix = text.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(text).drive or ".." in posix.split("/"):
        raise PackageError(
            f"{label}: {field} ({text}) is outside the package; a package's files must be "
            "inside it, named relative to its rdf.yaml"
        )
    return str(PurePosixPath(posix))


def _relative_source(file: Any, field: str, label: str) -> str:
    """Return the relative path of a described file; refuse URLs and absolute paths."""
    source = getattr(file, "source", file)
    relative = getattr(source, "path", None)
    if not isinstance(relative, PurePath) or relative.is_absolute():
        text = str(source)
        checked = _local_reference(field, text, label)
        if checked is None:
            raise PackageError(f"{label}: {field} ({text}) is not a file in the package")
        return checked
    return relative.as_posix()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
