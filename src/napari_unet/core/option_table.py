"""What prediction and training options share: how an option is described, checked, changed.

:class:`~napari_unet.core.predict.options.PredictOptions` and
:class:`~napari_unet.core.train.options.TrainOptions` are frozen dataclasses whose field
metadata (:func:`describe_option`) is the one description of each option, read by the CLI and
the napari docks; a call's keywords go on top of them through :func:`with_changes`.
"""

from __future__ import annotations

import numbers
import reprlib
from dataclasses import fields, replace
from typing import Any, TypeVar

import numpy as np

Options = TypeVar("Options")


def describe_option(
    flag: str, help: str, metavar: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Describe an option once: its CLI flag, help and metavar (and choices, sizes)."""
    return {"flag": flag, "help": help, "metavar": metavar, **extra}


def with_changes(
    options_class: type[Options], options: Options | None, changes: dict[str, Any], kind: str
) -> Options:
    """``options`` (or the defaults) with ``changes`` on top, checked again.

    Names that are not options are refused (a typo is not ignored): ``unknown <kind> options``.
    """
    unknown = sorted(set(changes) - {option.name for option in fields(options_class)})
    if unknown:
        raise ValueError(f"unknown {kind} options: {', '.join(unknown)}")
    return options_class(**changes) if options is None else replace(options, **changes)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (booleans are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> Any:
    """Return ``value`` if it is one of ``choices``; else refuse it, naming the option."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; not {reprlib.repr(value)}")
    return value
