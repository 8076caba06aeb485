"""Checks of a model folder's card and weights before any network is built.

Model folders come from anywhere (shared drives, downloads), so ``model.json`` is untrusted:
a depth of 40 or 1e9 base channels would allocate terabytes, a string where a number belongs
fails deep inside torch, and a mismatched weight file makes torch print every shape. Each
check here fails in milliseconds with one short line naming the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from napari_unet.core.models.network import UNet, UNetConfig
from napari_unet.core.normalize import KINDS
from napari_unet.names import DEFAULT_PERCENTILES

INT_RANGES = {
    "spatial_dims": (2, 3),
    "in_channels": (1, 64),
    "out_channels": (1, 256),
    "depth": (0, 8),
    "base_channels": (1, 1024),
}
"""Allowed ``architecture`` integers: far beyond any useful U-Net, far below a runaway one."""
CHOICES = {"padding": ("valid", "same"), "norm": ("none", "batch", "group")}
CHOICES["upsampling"] = ("transposed", "interpolate")
NORMALIZATION_KEYS = {"kind", "low", "high", "rgb", "dark_background"}
RGB_CONVERSIONS = ("mean", "hematoxylin", "none")
POSTPROCESS_RANGES = {
    "foreground_threshold": (0.0, 2.0),
    "seed_threshold": (0.0, 1.0),
    "interior_threshold": (0.0, 1.0),
    "min_size": (0, 10**9),
    "flow_steps": (1, 10**4),
}
"""The post-processing settings a card may hold (``core.postprocess``), with their ranges;
``min_size`` is a whole number of pixels, ``flow_steps`` of unit steps along a flows model's
vectors, the thresholds are probabilities."""
MAX_CARD_BYTES = 2**20
"""A card is a few kilobytes of JSON; a larger one is not read into memory."""
MAX_LISTED = 3
"""Weight names quoted in a mismatch message; the rest are counted."""


class ModelCardError(ValueError):
    """A model card or weight file that cannot describe a working model."""


def check_card(card: Any) -> None:
    """Check a parsed ``model.json``: types and ranges of every field the engine uses."""
    _require(isinstance(card, dict), "the card is not a JSON object")
    _require(isinstance(card.get("name"), str), "'name' must be a string")
    _require(isinstance(card.get("description", ""), str), "'description' must be a string")
    architecture = card.get("architecture")
    _require(isinstance(architecture, dict), "'architecture' must be an object")
    for key, (low, high) in INT_RANGES.items():
        if key in architecture:
            _check_int(f"architecture.{key}", architecture[key], low, high)
    for key, allowed in CHOICES.items():
        if key in architecture:
            _require(architecture[key] in allowed, f"architecture.{key} must be one of {allowed}")
    classes = card.get("class_names", [])
    _require(
        isinstance(classes, list) and all(isinstance(name, str) for name in classes),
        "'class_names' must be a list of strings",
    )
    check_normalization(card.get("normalization", {}))
    _check_postprocess(card.get("postprocess", {}))
    size = card.get("pixel_size_um")
    _require(
        size is None or (_is_number(size) and 0 < size < 1e5),
        f"'pixel_size_um' must be a positive number of micrometres or null, not {size!r:.40}",
    )
    _require(
        isinstance(card.get("test_time_augmentation", False), bool),
        "'test_time_augmentation' must be true or false",
    )
    version = card.get("format_version", 1)
    _check_int("format_version", version, 1, 10**6)
    for key in ("provenance", "metrics"):
        _require(isinstance(card.get(key, {}), dict), f"'{key}' must be an object")


def check_weights(path: Path, config: UNetConfig) -> None:
    """Compare the weight file's tensor names and shapes (its header only) with the card's."""
    with torch.device("meta"):  # shapes without memory, whatever the card claims
        expected = {key: tuple(value.shape) for key, value in UNet(config).state_dict().items()}
    try:
        with safe_open(path, framework="pt") as weights:
            stored = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except Exception as error:  # safetensors raises its own types for corrupt files
        raise ModelCardError(f"{path.name} is not a readable safetensors file: {error}") from error
    problems = []
    for label, keys in (
        ("missing", sorted(expected.keys() - stored.keys())),
        ("unexpected", sorted(stored.keys() - expected.keys())),
    ):
        if keys:
            problems.append(f"{len(keys)} {label} ({_first(keys)})")
    wrong = [key for key in expected.keys() & stored.keys() if expected[key] != stored[key]]
    if wrong:
        key = sorted(wrong)[0]
        problems.append(
            f"{len(wrong)} of another shape (e.g. {key}: file {stored[key]}, card {expected[key]})"
        )
    if problems:
        raise ModelCardError(
            f"{path.name} does not match the card's architecture: " + "; ".join(problems)
        )


def check_finite(state: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or infinity: such a model segments everything as empty."""
    broken = sorted(
        key
        for key, value in state.items()
        if value.is_floating_point() and not value.isfinite().all()
    )
    if broken:
        raise ModelCardError(
            f"{len(broken)} weight tensors hold NaN or infinite values ({_first(broken)}); "
            "the model is broken (did its training diverge?)"
        )


def read_card(path: Path) -> dict[str, Any]:
    """Parse ``model.json`` with a short error for files that are not JSON."""
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise ModelCardError(f"{path.name} is over {MAX_CARD_BYTES // 2**20} MB, not a card")
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelCardError(f"{path.name} is not readable JSON: {error}") from error
    check_card(card)
    return card


def check_normalization(settings: Any) -> None:
    """Check a card's (or a training call's) ``normalization`` settings."""
    _require(isinstance(settings, dict), "'normalization' must be an object")
    unknown = sorted(set(settings) - NORMALIZATION_KEYS)
    _require(not unknown, f"normalization has unknown keys {unknown}")
    _require(settings.get("kind", "percentile") in KINDS, f"normalization.kind must be in {KINDS}")
    low, high = (
        settings.get("low", DEFAULT_PERCENTILES[0]),
        settings.get("high", DEFAULT_PERCENTILES[1]),
    )
    _require(
        _is_number(low) and _is_number(high) and 0 <= low < high <= 100,
        f"normalization.low and .high must be percentiles with low < high, not {low!r}, {high!r}",
    )
    _require(
        settings.get("rgb", "mean") in RGB_CONVERSIONS,
        f"normalization.rgb must be one of {RGB_CONVERSIONS}",
    )
    _require(
        isinstance(settings.get("dark_background", False), bool),
        "normalization.dark_background must be true or false",
    )


def _check_postprocess(settings: Any) -> None:
    _require(isinstance(settings, dict), "'postprocess' must be an object")
    unknown = sorted(set(settings) - set(POSTPROCESS_RANGES))
    _require(not unknown, f"postprocess has unknown keys {unknown}")
    for key, value in settings.items():
        low, high = POSTPROCESS_RANGES[key]
        if isinstance(low, int):
            _check_int(f"postprocess.{key}", value, low, high)
        else:
            _require(
                _is_number(value) and low <= value <= high,
                f"postprocess.{key} must be a number from {low} to {high}, not {value!r:.40}",
            )


def _check_int(name: str, value: Any, low: float, high: float) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        f"{name} must be a whole number from {low} to {high}, not {value!r:.40}",
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _first(keys: list[str]) -> str:
    more = f", ... {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ModelCardError(message)
