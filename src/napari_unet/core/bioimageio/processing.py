"""bioimage.io pre- and post-processing, translated to what the tiled engine does.

Statistics-based input steps (``scale_range``, ``zero_mean_unit_variance``) become the card's
normalisation, which the engine computes once per image so every tile is scaled alike; fixed
steps (``scale_linear``, ``fixed_zero_mean_unit_variance``, ``clip``, ``sigmoid``,
``binarize``) run on each tile before the network. Output steps become an
:class:`OutputRule` that turns the network's output into class logits, which the engine
softmaxes, argmaxes or thresholds as it does for its own models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

FLOAT_DTYPES = ("float32", "float64")
STATISTICS = ("scale_range", "zero_mean_unit_variance")
FIXED_INPUT_STEPS = (
    "scale_linear",
    "fixed_zero_mean_unit_variance",
    "clip",
    "sigmoid",
    "binarize",
)


class UnsupportedPackage(ValueError):
    """The package describes something the engine cannot run; the message says what."""


@dataclass(frozen=True)
class FixedStep:
    """One fixed input step on ``(N, C, *spatial)`` tiles: ``clamp(x * gain + offset)``, etc."""

    kind: Literal["affine", "clip", "sigmoid", "binarize"]
    gain: tuple[float, ...] = (1.0,)
    offset: tuple[float, ...] = (0.0,)
    low: float | None = None
    high: float | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the step to a batch of tiles (channels on axis 1)."""
        if self.kind == "sigmoid":
            return torch.sigmoid(x)
        if self.kind == "binarize":
            return (x > self.low).to(x.dtype)
        if self.kind == "clip":
            return torch.clamp(x, self.low, self.high)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        gain = torch.tensor(self.gain, dtype=x.dtype, device=x.device).reshape(shape)
        offset = torch.tensor(self.offset, dtype=x.dtype, device=x.device).reshape(shape)
        return x * gain + offset


def input_steps(
    steps: Sequence[Any], spatial: Sequence[str], channels: int
) -> tuple[dict[str, Any], list[FixedStep]]:
    """Split the input's preprocessing into the card's normalisation and fixed tile steps."""
    normalization: dict[str, Any] = {"kind": "none"}
    fixed: list[FixedStep] = []
    for position, step in enumerate(steps):
        name, kwargs = step.id, step.kwargs
        if name == "ensure_dtype":
            _check_float(kwargs.dtype, "input")
        elif name in STATISTICS:
            if fixed or (position and normalization["kind"] != "none"):
                raise UnsupportedPackage(
                    f"preprocessing step {name!r} comes after another step; napari-unet "
                    "computes image statistics on the raw image only"
                )
            _check_reduction(name, kwargs, spatial, channels)
            normalization = (
                {"kind": "percentile", "low": kwargs.min_percentile, "high": kwargs.max_percentile}
                if name == "scale_range"
                else {"kind": "meanstd"}
            )
        elif name in FIXED_INPUT_STEPS:
            fixed.append(_fixed_step(name, kwargs, channels))
        else:
            raise UnsupportedPackage(f"preprocessing step {name!r} is not supported")
    return normalization, fixed


def _check_float(dtype: str, where: str) -> None:
    if dtype not in FLOAT_DTYPES:
        raise UnsupportedPackage(f"ensure_dtype {dtype!r} on the {where} is not supported")


def _check_reduction(name: str, kwargs: Any, spatial: Sequence[str], channels: int) -> None:
    """Check the step's statistics are per channel over space, as the engine computes them."""
    reference = getattr(kwargs, "reference_tensor", None)
    if reference is not None:
        raise UnsupportedPackage(f"{name} with a reference_tensor ({reference}) is not supported")
    axes = None if kwargs.axes is None else {str(a) for a in kwargs.axes}
    if axes is not None and not set(spatial) <= axes:
        raise UnsupportedPackage(
            f"{name} over axes {sorted(axes)} (not all of {list(spatial)}) is not supported"
        )
    if channels > 1 and (axes is None or "channel" in axes):
        raise UnsupportedPackage(f"{name} jointly over {channels} channels is not supported")


def _fixed_step(name: str, kwargs: Any, channels: int) -> FixedStep:
    if name == "sigmoid":
        return FixedStep("sigmoid")
    if name == "binarize":
        return FixedStep("binarize", low=float(_scalar(kwargs.threshold, name)))
    if name == "clip":
        if kwargs.min_percentile is not None or kwargs.max_percentile is not None:
            raise UnsupportedPackage("clip by percentiles is not supported")
        return FixedStep("clip", low=kwargs.min, high=kwargs.max)
    axis = getattr(kwargs, "axis", None)
    if axis is not None and str(axis) != "channel":
        raise UnsupportedPackage(f"{name} along axis {axis!r} is not supported")
    if name == "scale_linear":
        gain, offset = _per_channel(kwargs.gain, channels), _per_channel(kwargs.offset, channels)
    else:
        std = np.asarray(_per_channel(kwargs.std, channels))
        gain = tuple(1.0 / std)
        offset = tuple(-np.asarray(_per_channel(kwargs.mean, channels)) / std)
    return FixedStep("affine", gain=tuple(map(float, gain)), offset=tuple(map(float, offset)))


def _scalar(value: Any, name: str) -> float:
    if isinstance(value, list | tuple):
        raise UnsupportedPackage(f"{name} with one value per channel is not supported")
    return float(value)


def _per_channel(value: Any, channels: int) -> tuple[float, ...]:
    values = tuple(value) if isinstance(value, list | tuple) else (value,) * channels
    if len(values) != channels:
        raise UnsupportedPackage(f"{len(values)} values given for {channels} channels")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class OutputRule:
    """How the network's output becomes class logits for the engine.

    ``activation`` says what the output channels are: ``"softmax"`` class logits,
    ``"sigmoid"`` per-channel logits, ``"probabilities"`` already activated (a softmax that
    sums to one, or one channel's probability). A single channel (``channel``) becomes the
    two classes background and foreground, with the foreground's decision at ``threshold``.
    """

    activation: Literal["softmax", "sigmoid", "probabilities", "scores"]
    channel: int | None = None
    threshold: float | None = None

    @property
    def classes(self) -> int | None:
        """2 for a single-channel rule; ``None``: the network's own channel count."""
        return 2 if self.channel is not None else None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        """Turn ``(N, K, *spatial)`` network output into ``(N, classes, *spatial)`` logits."""
        if self.channel is None:
            if self.activation == "probabilities":
                return torch.log(output.clamp_min(1e-12))
            return output
        z = output[:, self.channel : self.channel + 1]
        if self.activation == "probabilities":
            z = torch.logit(z.clamp(1e-6, 1 - 1e-6))
        return torch.cat([torch.full_like(z, self._decision()), z], dim=1)

    def _decision(self) -> float:
        """Return the foreground's decision value in logit units (0 without binarize)."""
        if self.threshold is None:
            return 0.0
        if self.activation == "scores":
            return self.threshold
        return math.log(self.threshold / (1 - self.threshold))


def output_rule(
    steps: Sequence[Any],
    channels: int,
    test_output: np.ndarray | None,
    channel: int | None,
) -> OutputRule:
    """Read the output's postprocessing (and, without an activation, its test output)."""
    activation: str | None = None
    threshold = None
    for step in steps:
        name = step.id
        if name == "ensure_dtype":
            _check_float(step.kwargs.dtype, "output")
        elif name in ("sigmoid", "softmax") and activation is None and threshold is None:
            if name == "softmax" and str(step.kwargs.axis) != "channel":
                raise UnsupportedPackage(f"softmax along {step.kwargs.axis!r} is not supported")
            activation = name
        elif name == "binarize" and threshold is None:
            threshold = _scalar(step.kwargs.threshold, name)
        else:
            raise UnsupportedPackage(
                f"postprocessing step {name!r} (after {[s.id for s in steps]}) is not "
                "supported: napari-unet runs U-Nets whose output is class scores"
            )
    if activation is None:
        activation = _guess_activation(test_output, channels, threshold)
    if activation == "softmax" and (threshold is not None or channels == 1):
        raise UnsupportedPackage("binarize after softmax, or a softmax of one channel")
    single = (
        channels == 1
        or activation in ("sigmoid", "scores")
        or (activation == "probabilities" and not _sums_to_one(test_output))
    )
    if not single:
        if channel is not None:
            raise UnsupportedPackage(
                f"output_channel={channel} given, but the output's {channels} channels are "
                "classes of one softmax"
            )
        return OutputRule(activation)  # type: ignore[arg-type]
    if channels > 1 and channel is None:
        raise UnsupportedPackage(
            f"the output has {channels} independent channels ({activation}), not one class "
            "partition; pass output_channel=N to segment channel N as the foreground"
        )
    channel = 0 if channel is None else channel
    if not 0 <= channel < channels:
        raise UnsupportedPackage(f"output_channel={channel} is out of range for {channels}")
    return OutputRule(activation, channel, threshold)  # type: ignore[arg-type]


def _guess_activation(
    test_output: np.ndarray | None, channels: int, threshold: float | None
) -> str:
    """Without an activation step, the package's test output tells what the network emits."""
    if test_output is None:
        raise UnsupportedPackage(
            "its output has no sigmoid or softmax step and no test output to tell whether "
            "the network emits probabilities or scores"
        )
    if test_output.min() >= 0 and test_output.max() <= 1:
        return "probabilities"
    if threshold is not None:
        return "scores"
    if channels > 1:
        return "softmax"
    raise UnsupportedPackage(
        "the model's single output channel is not a probability (test output outside [0, 1]) "
        "and has no sigmoid or binarize step: it looks like an image, not a segmentation; "
        "napari-unet runs segmentation U-Nets only"
    )


def _sums_to_one(test_output: np.ndarray | None) -> bool:
    """Tell whether the test output's channels sum to one: a softmax inside the network."""
    return test_output is not None and bool(np.allclose(test_output.sum(axis=1), 1.0, atol=1e-3))
