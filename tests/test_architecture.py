"""The package's import graph, read from the source (ast): layers and import circles.

Imports inside functions count: they hide a circle from Python's import machinery but not
from a reader. Imports under ``if TYPE_CHECKING:`` do not: they are annotations only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import napari_unet

PACKAGE = Path(napari_unet.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str], root: Path = PACKAGE) -> Iterator[str]:
    """Our modules that ``path`` imports anywhere, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".") if package else []
                up = up[: len(up) - (node.level - 1)] if node.level > 1 else up
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            name = name.removeprefix("napari_unet.").removeprefix("napari_unet")
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != here:
                yield name


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(path) for path in paths}
    return {module_name(path): set(imported_modules(path, known)) for path in paths}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_engine_imports_neither_the_napari_front_end_nor_the_cli():
    upward = {
        module: sorted(target for target in targets if target.split(".")[0] in ("_napari", "cli"))
        for module, targets in import_graph().items()
        if module.startswith("core")
    }
    assert not {module: targets for module, targets in upward.items() if targets}


LOWER_LAYERS = {
    "core.io": ("core.predict", "core.train", "core.evaluate"),
    "core.models": ("core.predict", "core.train", "core.evaluate"),
    "core.predict": ("core.train", "core.evaluate"),
}
"""Packages and what they must not import: files and models sit below prediction, prediction
below training and evaluation (which run predictions)."""


def test_lower_layers_do_not_import_upward():
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for lower, forbidden in LOWER_LAYERS.items()
        if module.startswith(lower)
        for target in targets
        if target.startswith(forbidden)
    ]
    assert upward == []


def test_the_graph_sees_imports_inside_functions_but_not_type_checking_ones(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from napari_unet.core.models.registry import Model\n"
        "def later():\n"
        "    from napari_unet.core.predict import blockwise\n"
        "    import napari_unet.core.predict.tiling\n"
    )
    known = {
        "core.models.registry",
        "core.predict.blockwise",
        "core.predict.tiling",
        "core.predict",
    }
    found = set(imported_modules(module, known, root=tmp_path))
    assert found == {"core.predict.blockwise", "core.predict.tiling", "core.predict"}
