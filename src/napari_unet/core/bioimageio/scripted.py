"""A TorchScript twin of the U-Net for the ``torchscript`` weights.

Tracing bakes a ``"valid"`` network's skip-connection crops in at the traced size, so the
package's torchscript would be wrong at other sizes. This twin shares the U-Net's layers
and does the crops in script, so one file runs at every size the package allows.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_unet.core.models.network import UNet


class _Stage(nn.Module):
    """One expanding step: up-sample, crop the skip to match, concatenate, convolve."""

    def __init__(self, up: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.up, self.decoder = up, decoder

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        for dim in range(2, skip.dim()):
            start = (skip.size(dim) - x.size(dim)) // 2
            skip = skip.narrow(dim, start, x.size(dim))
        return self.decoder(torch.cat([skip, x], dim=1))


class _ScriptableUNet(nn.Module):
    def __init__(self, network: UNet) -> None:
        super().__init__()
        self.encoders, self.pool, self.head = network.encoders, network.pool, network.head
        stages = zip(network.ups, network.decoders, strict=True)
        self.stages = nn.ModuleList(_Stage(up, decoder) for up, decoder in stages)
        self.depth = network.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.depth:
                skips.append(x)
                x = self.pool(x)
        for level, stage in enumerate(self.stages):
            x = stage(x, skips[self.depth - 1 - level])
        return self.head(x)


def script_unet(network: UNet) -> torch.jit.ScriptModule:
    """Compile ``network`` (in eval mode) to TorchScript that runs at any valid size."""
    return torch.jit.script(_ScriptableUNet(network).eval())
