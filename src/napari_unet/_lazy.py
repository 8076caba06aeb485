"""Lazy re-exports: a package names its public objects without importing their modules.

Importing a submodule runs its package's ``__init__`` first; an ``__init__`` that imported its
submodules eagerly would drag torch into the napari manifest read and turn every import from a
lower layer into an import of the whole package above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return ``__getattr__``, ``__dir__`` and ``__all__`` for ``package``.

    ``exports`` maps each public name to the module defining it, absolute or relative to
    ``package`` (``".predictor"``); the module is imported on first access only.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted([*vars(importlib.import_module(package)), *exports])

    return __getattr__, __dir__, sorted(exports)
