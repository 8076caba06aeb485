"""The ``export`` sub-command: a model in, a bioimage.io package out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register_export(subparsers: Any) -> None:
    """Add ``napari-unet export``."""
    parser = subparsers.add_parser(
        "export",
        help="write a model as a bioimage.io package (.zip)",
        description="Write a model as a bioimage.io model package for the model zoo, "
        "deepImageJ, ilastik, QuPath and bioimageio.core (needs the bioimageio extra).",
    )
    parser.add_argument("model", help="built-in or saved model name, or folder")
    parser.add_argument(
        "out",
        metavar="OUT.zip",
        help="package to write, or a folder (ending in /) to write <model name>.zip into",
    )
    parser.add_argument(
        "--sample",
        type=Path,
        help="image the test tensors are cropped from (mirrored out if smaller than the "
        "network accepts); default: a synthetic image of blobs at a size the network accepts",
    )
    parser.add_argument(
        "--author", action="append", dest="authors", help="author name (repeatable)"
    )
    parser.add_argument("--license", default="BSD-3-Clause", help="SPDX licence of the weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export the model; print where the package went."""
    from napari_unet.core.bioimageio.export import export_bioimageio

    sample = None
    if args.sample is not None:
        from napari_unet.core.io import read_image

        image = read_image(args.sample)
        sample = image.data if "C" not in image.axes else _channels_first(image)
    path = export_bioimageio(
        args.model,
        args.out,
        sample=sample,
        authors=args.authors or ("napari-unet developers",),
        license=args.license,
        overwrite=args.overwrite,
    )
    print(path, file=sys.stdout)
    return 0


def _channels_first(image: Any) -> Any:
    import numpy as np

    return np.moveaxis(np.asarray(image.data), image.axes.index("C"), 0)
