"""Command-line flags built from an engine's option table, so flags and API never drift.

Each option's flag, help, metavar and choices live in the field metadata of its frozen options
class (:class:`~napari_unet.core.predict.options.PredictOptions`); this module turns them into
argparse arguments and back into a checked options object.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def add_option_flags(parser: argparse.ArgumentParser, options_class: type) -> None:
    """Add one flag per field of ``options_class`` that has a ``flag`` in its metadata.

    On/off options become ``--flag``/``--no-flag``; the rest take text, whole numbers or
    numbers by their annotation, and sizes (``512`` or ``64,256,256``) where marked. Choices
    are shown, but checked by the options class: one line and exit status 1, as for any bad
    value.
    """
    for option in dataclasses.fields(options_class):
        meta = option.metadata
        if "flag" not in meta:
            continue
        kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": meta["help"]}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        kind = _kind(str(option.type))
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _sizes if meta.get("sizes") else meta.get("type") or kind
        parser.add_argument(meta["flag"], **kwargs)


def options_from_args(args: argparse.Namespace, options_class: type) -> Any:
    """Return the checked options object for the flags given (others keep their defaults)."""
    given = {
        option.name: getattr(args, option.name)
        for option in dataclasses.fields(options_class)
        if getattr(args, option.name, None) is not None
    }
    return options_class(**given)


def _kind(annotation: str) -> type:
    """``bool``, ``int``, ``float`` or ``str``, read from a field's annotation text."""
    members = {part.strip() for part in annotation.split("|")}
    for kind in (bool, int, float):
        if kind.__name__ in members:
            return kind
    return str


def _sizes(text: str) -> int | tuple[int, ...]:
    """``512`` or ``64,256,256``: one size for every axis, or one per axis."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give whole numbers of pixels, e.g. 512 or 64,256,256"
        ) from None
    return values[0] if len(values) == 1 else values
