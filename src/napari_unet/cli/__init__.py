"""The ``napari-unet`` shell front end: arguments in, one core call, progress out."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from napari_unet.cli import _commands


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="napari-unet", description="U-Net segmentation of microscopy images."
    )
    debug_help = "show full tracebacks on errors"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _commands.REGISTRY:
        register(subcommands)
    for subcommand in subcommands.choices.values():
        # Also after the sub-command, where users type it; SUPPRESS keeps the top-level value.
        subcommand.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; bad input exits non-zero with a one-line error unless ``--debug``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    clash = name_clash()
    if clash:
        print(f"napari-unet: warning: {clash}", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"napari-unet {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 1


OUR_DISTRIBUTION = "napari-unet-segment"
OTHER_DISTRIBUTION = "napari-unet"
"""An unrelated project on PyPI whose files are also the import package ``napari_unet``."""


def name_clash() -> str | None:
    """Say what to do if the unrelated ``napari-unet`` distribution is installed beside ours.

    Both install the import package ``napari_unet``, so pip lets one overwrite the other's
    files without a word. Reads installed metadata only (a few milliseconds, no torch).
    """
    from importlib import metadata

    try:
        other = metadata.distribution(OTHER_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    return (
        f"the unrelated package {OTHER_DISTRIBUTION} {other.version} is installed beside "
        f"{OUR_DISTRIBUTION}; both install the Python package napari_unet, so one has "
        f"overwritten the other's files. Run: pip uninstall {OTHER_DISTRIBUTION} "
        f"{OUR_DISTRIBUTION} && pip install {OUR_DISTRIBUTION} (in a separate environment "
        f"if you need {OTHER_DISTRIBUTION})"
    )


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """Print a warning as one line (a broken model, a dropped pixel size), not a source line."""
    text = str(message).removeprefix("napari-unet: ")
    print(f"napari-unet: warning: {text}", file=sys.stderr)


def error_line(error: BaseException) -> str:
    """Return the one line shown for an error, never empty: a bare MemoryError says what it is."""
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        return f"out of memory{': ' + text if text else ''} (try a smaller --tile or --batch-size)"
    return text or f"{type(error).__name__} (run with --debug for the traceback)"
