"""Widen a trained U-Net without changing what it computes (Net2WiderNet, Chen et al. 2016).

Training a wider network from scratch costs hours on a CPU; starting it from a trained narrow
one keeps what was learned and lets fine-tuning use the extra channels. Every new channel is a
copy of an existing one (same weights, same batch-norm statistics); layers that read a copied
channel split its incoming weight among the copies, so the output is unchanged. A little noise
then breaks the symmetry between copies.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_unet.core.models.network import UNet, UNetConfig
from napari_unet.core.models.registry import Model, ModelDescription


def widen(model: Model, base_channels: int, seed: int = 0, noise: float = 0.0) -> Model:
    """Return a copy of ``model`` with ``base_channels`` (more than it has) at the top level.

    ``noise`` is the standard deviation, relative to each weight tensor's, of the Gaussian
    noise added to the widened convolution weights (0 keeps the outputs exactly).
    """
    config = model.description.architecture
    if base_channels <= config.base_channels:
        raise ValueError(f"base_channels must exceed {config.base_channels}, got {base_channels}")
    if config.norm != "batch" or config.upsampling != "transposed":
        raise ValueError("only batch-norm U-Nets with transposed up-convolutions can be widened")
    rng = np.random.default_rng(seed)
    old = model.network.state_dict()
    wide = UNet(UNetConfig.from_dict({**config.to_dict(), "base_channels": base_channels}))
    new = wide.state_dict()

    def mapping(width: int) -> torch.Tensor:
        """Old channel behind each new channel: all old ones, then random repeats."""
        extra = rng.integers(0, width, size=width * base_channels // config.base_channels - width)
        return torch.from_numpy(np.concatenate([np.arange(width), extra]))

    def fill(prefix: str, out_map: torch.Tensor | None, in_map: torch.Tensor | None) -> None:
        """Copy one convolution (weight layout: out, in, ...; transposed: in, out, ...)."""
        weight_key = f"{prefix}.weight"
        weight = old[weight_key]
        out_axis, in_axis = (1, 0) if prefix.startswith("ups.") else (0, 1)
        if out_map is not None:
            weight = weight.index_select(out_axis, out_map)
        if in_map is not None:
            counts = torch.bincount(in_map).to(weight.dtype)
            shape = [1] * weight.ndim
            shape[in_axis] = -1
            weight = weight.index_select(in_axis, in_map) / counts[in_map].reshape(shape)
        new[weight_key] = weight.clone()
        bias_key = f"{prefix}.bias"
        if bias_key in old:
            bias = old[bias_key]
            new[bias_key] = (bias.index_select(0, out_map) if out_map is not None else bias).clone()

    def fill_norm(prefix: str, out_map: torch.Tensor) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            new[f"{prefix}.{name}"] = old[f"{prefix}.{name}"].index_select(0, out_map).clone()
        new[f"{prefix}.num_batches_tracked"] = old[f"{prefix}.num_batches_tracked"].clone()

    def double_conv(prefix: str, in_map: torch.Tensor | None, width: int) -> torch.Tensor:
        middle, out = mapping(width), mapping(width)
        fill(f"{prefix}.0", middle, in_map)
        fill_norm(f"{prefix}.1", middle)
        fill(f"{prefix}.3", out, middle)
        fill_norm(f"{prefix}.4", out)
        return out

    widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
    skips, previous = [], None
    for level, width in enumerate(widths):
        previous = double_conv(f"encoders.{level}", previous, width)
        skips.append(previous)
    for index, width in enumerate(reversed(widths[:-1])):
        up_map = mapping(width)
        fill(f"ups.{index}.layers", up_map, previous)
        skip = skips[config.depth - 1 - index]
        joined = torch.cat([skip, up_map + width])  # old input: skip, then up
        previous = double_conv(f"decoders.{index}", joined, width)
    fill("head", None, previous)

    if noise > 0:
        generator = torch.Generator().manual_seed(seed)
        for key, value in new.items():
            if key.endswith(".weight") and value.ndim > 1:
                scale = noise * float(value.std())
                new[key] = value + scale * torch.randn(value.shape, generator=generator)
    wide.load_state_dict(new)
    card = ModelDescription.from_dict(model.description.to_dict())
    card.architecture = wide.config
    card.provenance = {**card.provenance, "widened_from_base_channels": config.base_channels}
    return Model(card, wide)
