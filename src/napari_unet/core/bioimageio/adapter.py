"""A bioimage.io network dressed as a :class:`~napari_unet.core.models.network.UNet` for the engine.

The tiled engine asks a network for its size rules (``valid_input_size``, ``output_size``,
``output_size_or_none``, ``size_multiple``), its receptive field (``context``) and its
``config`` (``padding``, ``spatial_dims``), and calls it on ``(N, C, *spatial)`` float32
tiles for ``(N, classes, *spatial)`` logits. This wrapper answers from the package's axes
(``min + n * step`` sizes, output offset, halo) and translates layouts, fixed input steps
and output activations around the packaged module.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from napari_unet.core.bioimageio.processing import FixedStep, OutputRule
from napari_unet.core.models.network import ConfigGeometry, UNetConfig


@dataclass(frozen=True)
class SizeRule:
    """Input lengths ``min + n * step`` (every spatial axis alike); output = input + offset.

    ``halo`` output pixels per side are unreliable: a ``"same"`` network leaves them to the
    engine's overlap, a ``"valid"`` one has them cropped here.
    """

    min: int
    step: int
    offset: int = 0
    halo: int = 0

    @property
    def same(self) -> bool:
        """Output as large as the input: the engine tiles it like a ``"same"`` U-Net."""
        return self.offset == 0


class PackagedNetwork(ConfigGeometry, nn.Module):
    """Run a packaged module as the engine runs a U-Net (see the module docstring)."""

    def __init__(
        self,
        module: nn.Module,
        config: UNetConfig,
        sizes: SizeRule,
        layouts: tuple[Sequence[str], Sequence[str]],
        input_steps: Sequence[FixedStep],
        output: OutputRule,
        batch_of_one: bool,
    ) -> None:
        super().__init__()
        self.module = module
        self.config = config
        self.sizes = sizes
        self.input_layout, self.output_layout = (tuple(layout) for layout in layouts)
        self.input_steps = tuple(input_steps)
        self.output = output
        self.batch_of_one = batch_of_one

    def _apply(self, fn: Any, recurse: bool = True) -> PackagedNetwork:
        """Move or convert the module; TorchScript's probing of ``.grad`` warns needlessly."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The .grad attribute", UserWarning)
            return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle for dask workers: a TorchScript module travels as its saved bytes."""
        state = self.__dict__.copy()
        module = state["_modules"]["module"]
        if isinstance(module, torch.jit.ScriptModule):
            buffer = io.BytesIO()
            torch.jit.save(module, buffer)
            state["_modules"] = {**state["_modules"], "module": buffer.getvalue()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        module = state["_modules"]["module"]
        if isinstance(module, bytes):
            state["_modules"] = {**state["_modules"], "module": torch.jit.load(io.BytesIO(module))}
        super().__setstate__(state)

    @property
    def size_multiple(self) -> int:
        """Valid input lengths are this far apart."""
        return self.sizes.step

    @property
    def context(self) -> int:
        """Input pixels per side an output pixel depends on, as far as the package says."""
        return self.sizes.halo if self.sizes.same else self.sizes.halo - self.sizes.offset // 2

    def valid_input_size(self, min_size: int) -> int:
        """Smallest input length >= ``min_size`` that the package allows."""
        if min_size <= self.sizes.min:
            return self.sizes.min
        return self.sizes.min + math.ceil((min_size - self.sizes.min) / self.sizes.step) * (
            self.sizes.step
        )

    def output_size(self, input_size: int) -> int:
        """Output length for an input of ``input_size``; raises if that input is not allowed."""
        size = self.output_size_or_none(input_size)
        if size is None:
            raise ValueError(
                f"input size {input_size} is not allowed by this model (sizes "
                f"{self.sizes.min} + n * {self.sizes.step})"
            )
        return size

    def output_size_or_none(self, input_size: int) -> int | None:
        """Output length for ``input_size``, or ``None`` where the network does not accept it."""
        above = input_size - self.sizes.min
        if above < 0 or above % self.sizes.step:
            return None
        size = input_size + self.sizes.offset - (0 if self.sizes.same else 2 * self.sizes.halo)
        return size if size > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, *spatial)`` tiles to ``(N, classes, *output_spatial)`` logits."""
        for step in self.input_steps:
            x = step(x)
        if self.batch_of_one and len(x) > 1:
            raw = torch.cat([self._call(item[None]) for item in x])
        else:
            raw = self._call(x)
        if not self.sizes.same and self.sizes.halo:
            halo = self.sizes.halo
            raw = raw[(slice(None), slice(None), *[slice(halo, -halo)] * self.spatial_dims)]
        return self.output(raw)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        """Call the packaged module in its own axis order and bring its output to ours."""
        canonical = ("batch", "channel", *self._spatial_ids())
        x = _to_layout(x.float().contiguous(), canonical, self.input_layout)
        out = self.module(x)
        if isinstance(out, list | tuple):
            out = out[0]
        return from_layout(out, self.output_layout, canonical)

    def _spatial_ids(self) -> tuple[str, ...]:
        return ("z", "y", "x")[-self.spatial_dims :]


def _to_layout(x: torch.Tensor, have: Sequence[str], want: Sequence[str]) -> torch.Tensor:
    """Drop the size-1 axes ``want`` lacks (batch, channel), then permute to ``want``."""
    for axis in reversed(range(len(have))):
        if have[axis] not in want:
            x = x.squeeze(axis)
    kept = [a for a in have if a in want]
    return x.permute(*(kept.index(a) for a in want))


def from_layout(x: torch.Tensor, have: Sequence[str], want: Sequence[str]) -> torch.Tensor:
    """Permute ``have`` into ``want``'s order, adding the size-1 axes ``have`` lacks."""
    x = x.permute(*(list(have).index(a) for a in want if a in have))
    for axis, name in enumerate(want):
        if name not in have:
            x = x.unsqueeze(axis)
    return x
