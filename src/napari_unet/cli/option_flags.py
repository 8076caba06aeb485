"""Command-line flags built from an engine's option table, so flags and API never drift.

Each option's flag, help, metavar and choices live in the field metadata of its frozen options
class (:class:`~napari_unet.core.predict.options.PredictOptions`); this module turns them into
argparse arguments and back into a checked options object.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def add_option_flags(parser: argparse.ArgumentParser, options_class: type) -> None:
    """Add one flag per field of ``options_class`` that has a ``flag`` in its metadata."""
    hints = typing.get_type_hints(options_class)
    for option in dataclasses.fields(options_class):
        meta = option.metadata
        if "flag" not in meta:
            continue
        kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": meta["help"]}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("choices"):  # shown, but checked by the options: one line, exit status 1
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        if bool in typing.get_args(hints[option.name]):  # --flag / --no-flag, else the default
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = (
                _sizes
                if meta.get("sizes")
                else meta.get("type") or _scalar_type(hints[option.name])
            )
        parser.add_argument(meta["flag"], **kwargs)


def options_from_args(args: argparse.Namespace, options_class: type) -> Any:
    """Return the checked options object for the flags given (others keep their defaults)."""
    given = {
        option.name: getattr(args, option.name)
        for option in dataclasses.fields(options_class)
        if getattr(args, option.name, None) is not None
    }
    return options_class(**given)


def _scalar_type(hint: Any) -> Any:
    """``int`` for ``int | None``, ``float`` for ``float | None``, else text (checked later)."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in (int, float):
        if kind in members:
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
