"""The ``predict``, ``models`` and ``info`` sub-commands: arguments in, core call, progress out."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_unet.cli.option_flags import add_option_flags, options_from_args
from napari_unet.core.predict.options import PredictOptions
from napari_unet.names import DEFAULT_MODEL, TIFF_SUFFIXES, ZARR_SUFFIX, image_stem

OUTPUT_SUFFIX = {"probabilities": "_probabilities", "semantic": "_classes"}


def register_predict(subparsers: Any) -> None:
    """Add ``napari-unet predict``."""
    parser = subparsers.add_parser(
        "predict",
        help="segment images and write label images",
        description="Segment images (TIFF, OME-TIFF, ImageJ hyperstacks, OME-Zarr) with a "
        "U-Net and write labels, classes or probabilities as OME-TIFF or OME-Zarr, keeping axes "
        "and pixel size. Big images are read lazily and segmented block by block.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    parser.add_argument(
        "-o",
        "--out",
        dest="target",
        metavar="OUTPUT",
        required=True,
        help="output .tif/.tiff file or .ome.zarr (one input), or folder (end it with / to "
        "create one whose name has a dot); never inside an input, but an OME-Zarr input's "
        "labels/<name>",
    )
    parser.add_argument("--model", default=None, help="built-in or saved model name, or folder")
    parser.add_argument("--axes", help="axes of the inputs, e.g. ZYX (default: from the file)")
    add_option_flags(parser, PredictOptions)
    parser.add_argument("--level", type=int, default=0, help="OME-Zarr resolution level to segment")
    parser.add_argument(
        "--workers", type=int, help="run the blocks on a local dask cluster of N processes"
    )
    parser.add_argument(
        "--scheduler", help="run the blocks on the dask cluster at this address (tcp://host:8786)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_predict)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files and ``.zarr`` images as given, the images inside folders, and glob matches.

    An error for anything missing.
    """
    paths: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_file() or _is_zarr(path):
            paths.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if _is_zarr(p) or _is_tiff(p))
            if not found:
                raise FileNotFoundError(f"no .tif/.tiff files or .zarr images in folder {path}")
            paths += found
        elif glob.has_magic(text):
            matches = sorted(
                Path(p) for p in glob.glob(text) if Path(p).is_file() or _is_zarr(Path(p))
            )
            if not matches:
                raise FileNotFoundError(f"no files match {text!r}")
            paths += matches
        else:
            raise FileNotFoundError(f"no such file or folder: {text}")
    return paths


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ZARR_SUFFIX and path.is_dir()


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES and path.is_file()


def output_paths(inputs: list[Path], target: str | Path, kind: str) -> list[Path]:
    """One output per input: ``target`` itself for one input, else one per input inside it.

    ``target`` names one image when it ends in .tif or .tiff (and is neither an existing
    folder nor ends with a path separator) or lies in a .zarr (``x.ome.zarr``,
    ``x.ome.zarr/labels/cells``); several inputs need a folder. In a folder, each input
    ``<stem>`` gets ``<stem>_labels.tif`` (``_classes``, ``_probabilities`` for those
    outputs), or ``<stem>_labels.ome.zarr`` for an OME-Zarr input (probabilities are always
    OME-TIFF). Any other name with a suffix (``out.png``) is refused, never made a folder,
    unless it is an existing folder or ends with a path separator.
    """
    folder = str(target).endswith(("/", os.sep)) or Path(target).is_dir()
    target = Path(target)
    in_zarr = any(part.lower().endswith(ZARR_SUFFIX) for part in target.parts)
    if in_zarr or (target.suffix.lower() in TIFF_SUFFIXES and not folder):
        if len(inputs) > 1:
            raise ValueError(
                f"{len(inputs)} inputs need an output folder, not the single image {target}"
            )
        if kind == "probabilities" and in_zarr:
            raise ValueError("probabilities are written as OME-TIFF; give a .tif output")
        return [target]
    if target.suffix and not folder:
        raise ValueError(
            f"cannot write {target.name!r}: outputs are written as OME-TIFF (.tif, .tiff) or "
            f"OME-Zarr (.ome.zarr); name the output so, or end it with '/' for a folder named "
            f"{target.name!r}"
        )
    ending = OUTPUT_SUFFIX.get(kind, "_labels")
    return [
        target / (image_stem(path) + ending + (".ome.zarr" if _zarr_labels(path, kind) else ".tif"))
        for path in inputs
    ]


def _zarr_labels(source: Path, kind: str) -> bool:
    return kind != "probabilities" and _is_zarr(source)


def run_predict(args: argparse.Namespace) -> int:
    """Segment every input and write its result; checks options and paths before any work.

    A run that fails (a bad option, an unreadable image) removes the output folders it
    created, if they are empty. Inputs are read lazily and results written block by block
    (:mod:`napari_unet.core.io.results`), so memory stays within ``--memory`` whatever the
    image size.
    """
    from napari_unet.core.io.files import new_folders_removed_on_failure
    from napari_unet.core.io.output_checks import check_outputs
    from napari_unet.core.predict.predictor import Predictor

    options = options_from_args(args, PredictOptions)  # checked before anything is read
    inputs = expand_inputs(args.inputs)
    outputs = output_paths(inputs, args.target, options.output)
    if _on_cluster(args) and not all(_is_zarr(path) for path in inputs):
        raise ValueError(
            "--workers/--scheduler need OME-Zarr inputs: cluster workers read their own blocks "
            "from a store (convert TIFFs first, e.g. with bioformats2raw or ome-zarr)"
        )
    with new_folders_removed_on_failure(outputs):  # a failed run leaves no empty folders
        check_outputs(inputs, outputs, args.overwrite)  # before loading the model: fast
        # checks the options, then the model, device and tiles
        predictor = Predictor(args.model or DEFAULT_MODEL, options=options)
        _predict_all(args, predictor, inputs, outputs)
    return 0


def _predict_all(
    args: argparse.Namespace, predictor: Any, inputs: list[Path], outputs: list[Path]
) -> None:
    """Segment each input into its output, one lazily read image at a time."""
    from napari_unet.core.io import read_image
    from napari_unet.core.io.results import result_file
    from napari_unet.core.provenance import provenance_record

    with _cluster(args) as client:
        for source, target in zip(inputs, outputs, strict=True):
            image = read_image(source, lazy=True, level=args.level)
            axes = (args.axes or image.axes).upper()
            options = predictor.options
            request = predictor.request(image.data, axes, options.output, options.channel)
            out_axes = request.out_axes
            with (
                _progress_bar(source.name, args.quiet) as progress,
                result_file(
                    target,
                    request.out_shape,
                    out_axes,
                    request.kind,
                    image.pixel_size_um,
                    args.overwrite,
                ) as result,
            ):
                if options.diameter is None:
                    labels = predictor.run(request, progress, None, result.array, client)
                else:  # at the model's object size; comes back on the image's grid
                    labels = predictor.predict(
                        image.data, axes, progress=progress, out=result.array, client=client
                    )
                record = provenance_record(predictor.model, options, str(source), axes)
                result.save(labels, record)
            if not args.quiet:
                print(f"{source} -> {target}", file=sys.stderr)


@contextlib.contextmanager
def _cluster(args: argparse.Namespace) -> Iterator[Any]:
    """Yield a dask client for ``--scheduler``/``--workers`` (closed at the end), or ``None``."""
    if not _on_cluster(args):
        yield None
        return
    from napari_unet.core.predict.distributed import connect

    client = connect(args.scheduler, args.workers)
    try:
        yield client
    finally:
        cluster = client.cluster if args.workers is not None else None
        client.close()
        if cluster is not None:
            cluster.close()


class _progress_bar:
    """A tqdm bar on stderr fed by the engine's ``(done, total)`` callback."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.quiet = label, quiet
        self.bar: Any = None

    def __enter__(self) -> Any:
        return None if self.quiet else self.update

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.label, unit="tile", file=sys.stderr, leave=False)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def register_models(subparsers: Any) -> None:
    """Add ``napari-unet models``."""
    parser = subparsers.add_parser(
        "models",
        help="list built-in and saved models, one a line",
        description="List the built-in models and the models saved in the user model folder "
        "($NAPARI_UNET_MODELS_DIR, else ~/.local/share/napari-unet/models), one a line: name, "
        "output kind, 2D/3D, input channels and the first sentence of its description. "
        "A broken saved model is skipped with a warning.",
    )
    parser.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    """Print ``name  kind  dims  channels  description`` for each model."""
    from napari_unet.core.models.registry import describe_models

    models = describe_models()
    if not models:
        print("no models installed", file=sys.stderr)
    for name, card in models:
        summary = card.description.split(". ")[0].strip().rstrip(".")
        print(
            f"{name}\t{card.output_kind}\t{card.spatial_dims}D\t{card.in_channels} channel(s)"
            f"\t{summary}"
        )
    return 0


def register_info(subparsers: Any) -> None:
    """Add ``napari-unet info``."""
    parser = subparsers.add_parser(
        "info",
        help="shape, dtype, axes and pixel size of a file",
        description="Show what napari-unet reads from an image file's header (TIFF, OME-TIFF, "
        "ImageJ hyperstack or OME-Zarr) without reading its pixels: shape, dtype, axes, pixel "
        "size, whether it is a napari-unet label image, and an OME-Zarr's resolution levels.",
    )
    parser.add_argument("file", type=Path, help="image file or .zarr folder")
    parser.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Print what the engine reads from a file's header."""
    from napari_unet.core.io import describe_file

    info = describe_file(args.file)
    sizes = ", ".join(f"{axis} {size:g} µm" for axis, size in info["pixel_size_um"].items())
    print(f"file:       {info['path']}")
    print(f"shape:      {tuple(info['shape'])}")
    print(f"dtype:      {info['dtype']}")
    print(f"axes:       {info['axes']}")
    print(f"pixel size: {sizes or 'unknown'}")
    print(f"kind:       {'labels (napari-unet)' if info['labels'] else 'image'}")
    if len(info["levels"]) > 1:
        print(f"levels:     {', '.join(str(tuple(shape)) for shape in info['levels'])}")
    return 0


def _on_cluster(args: argparse.Namespace) -> bool:
    """Whether a cluster was asked for, ``--workers 0`` and ``--scheduler ""`` included.

    Those two are refused by the engine with a clear line instead of quietly running here.
    """
    return args.workers is not None or args.scheduler is not None
