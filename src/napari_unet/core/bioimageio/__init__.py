"""bioimage.io model packages: export napari-unet models, run bioimage.io U-Nets.

This package needs the ``bioimageio`` extra (``bioimageio.spec``, ``bioimageio.core``) only
when a package is written or read; recognising a package path here imports nothing heavy, so
:func:`napari_unet.core.models.registry.load_model` can dispatch to it cheaply.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
"""File names a bioimage.io description may have (older packages use ``rdf.yaml``)."""

CONFIG_KEY = "napari_unet"
"""Key under a package's ``config`` naming the napari-unet card and weights it attaches."""
URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^(https?|ftp|file|s3):", re.IGNORECASE)
"""A URL (``scheme://...``, or a web scheme with its slashes missing)."""
EXTRA_HINT = 'the bioimageio extra is not installed: pip install "napari-unet-segment[bioimageio]"'


def looks_like_url(text: str) -> bool:
    """Tell whether ``text`` is a URL: napari-unet refuses those, it never downloads."""
    return bool(URL_PATTERN.match(text.strip()))


def is_bioimageio_source(source: str | os.PathLike[str]) -> bool:
    """Tell whether ``source`` is a bioimage.io package: a zip, a folder or its YAML file.

    A URL counts, so that loading it is refused with how to use a local copy.
    """
    if isinstance(source, str) and looks_like_url(source):
        return True
    path = Path(source).expanduser()
    if path.is_file():
        return path.name.endswith(RDF_NAMES) or (path.suffix == ".zip" and zipfile.is_zipfile(path))
    return path.is_dir() and any((path / name).is_file() for name in RDF_NAMES)


def require_bioimageio() -> Any:
    """Import ``bioimageio.spec``, or fail with how to install it."""
    try:
        import bioimageio.spec
    except ImportError as error:
        raise ImportError(EXTRA_HINT) from error
    return bioimageio.spec
