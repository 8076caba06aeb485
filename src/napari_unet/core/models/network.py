"""The U-Net of Ronneberger, Fischer & Brox (2015), in 2D or 3D, as a plain serialisable config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

Padding = Literal["valid", "same"]
Norm = Literal["none", "batch", "group"]
Upsampling = Literal["transposed", "interpolate"]


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a network; stored as JSON beside the weights."""

    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: Padding = "valid"
    norm: Norm = "none"
    upsampling: Upsampling = "transposed"

    def __post_init__(self) -> None:
        checks = {
            "spatial_dims must be 2 or 3": self.spatial_dims in (2, 3),
            "in_channels must be >= 1": self.in_channels >= 1,
            "out_channels must be >= 1": self.out_channels >= 1,
            "depth must be >= 0": self.depth >= 0,
            "base_channels must be >= 1": self.base_channels >= 1,
            "padding must be 'valid' or 'same'": self.padding in ("valid", "same"),
            "norm must be 'none', 'batch' or 'group'": self.norm in ("none", "batch", "group"),
            "upsampling must be 'transposed' or 'interpolate'": self.upsampling
            in ("transposed", "interpolate"),
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid U-Net config {self}: " + "; ".join(failed))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetConfig:
        """Build from a dict, rejecting unknown keys so typos in model files surface."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown U-Net config keys: {sorted(unknown)}")
        return cls(**values)


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _norm(config: UNetConfig, channels: int) -> nn.Module:
    if config.norm == "batch":
        return (nn.BatchNorm2d if config.spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if config.norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by optional normalisation and ReLU."""

    def __init__(self, config: UNetConfig, in_channels: int, out_channels: int) -> None:
        conv = _conv(config.spatial_dims)
        pad = 1 if config.padding == "same" else 0
        bias = config.norm == "none"
        super().__init__(
            conv(in_channels, out_channels, 3, padding=pad, bias=bias),
            _norm(config, out_channels),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=pad, bias=bias),
            _norm(config, out_channels),
            nn.ReLU(inplace=True),
        )


class _Up(nn.Module):
    """Doubles the spatial size and halves the channels (the paper's 2x2 up-convolution)."""

    def __init__(self, config: UNetConfig, in_channels: int) -> None:
        super().__init__()
        dims, out_channels = config.spatial_dims, in_channels // 2
        if config.upsampling == "transposed":
            transposed = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
            self.layers: nn.Module = transposed(in_channels, out_channels, 2, stride=2)
        else:
            mode = "bilinear" if dims == 2 else "trilinear"
            pad = 1 if config.padding == "same" else 0
            self.layers = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
                _conv(dims)(in_channels, out_channels, 3, padding=pad),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _center_crop(skip: torch.Tensor, spatial: torch.Size) -> torch.Tensor:
    slices = [slice(None), slice(None)]
    for have, want in zip(skip.shape[2:], spatial, strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return skip[tuple(slices)]


class ConfigGeometry:
    """Geometry read from a network's ``config``: shared by :class:`UNet` and wrapped networks."""

    config: UNetConfig

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.config.spatial_dims

    @property
    def same_padding(self) -> bool:
        """Whether convolutions keep the size (``"same"``) rather than shrink it (``"valid"``)."""
        return self.config.padding == "same"


class UNet(ConfigGeometry, nn.Module):
    """U-Net with a contracting and an expanding path joined by skip connections.

    With ``padding="valid"`` every 3x3 convolution shrinks the map by 2 pixels, so the output
    is smaller than the input (``output_size``); the prediction engine supplies the missing
    context by mirroring the image border, as in the paper's overlap-tile strategy.
    """

    def __init__(self, config: UNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = UNetConfig(**overrides)
        elif overrides:
            config = UNetConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        pool = nn.MaxPool2d if config.spatial_dims == 2 else nn.MaxPool3d
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        in_channels = config.in_channels
        for width in widths:
            self.encoders.append(_DoubleConv(config, in_channels, width))
            in_channels = width
        self.pool = pool(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.ups.append(_Up(config, width * 2))
            self.decoders.append(_DoubleConv(config, width * 2, width))
        self.head = _conv(config.spatial_dims)(widths[0], config.out_channels, 1)

    @classmethod
    def paper(cls) -> UNet:
        """Build the paper's exact network: 23 convolutions, 572 -> 388 pixels, ~31 M weights."""
        return cls(UNetConfig(in_channels=1, out_channels=2, depth=4, base_channels=64))

    @property
    def size_multiple(self) -> int:
        """Spatial sizes of ``"same"`` inputs must be a multiple of this (one halving per pool)."""
        return 2**self.config.depth

    def output_size(self, input_size: int) -> int:
        """Output length along one axis for an input of ``input_size``; raises if not allowed."""
        size = self.output_size_or_none(input_size)
        if size is None:
            raise ValueError(self._size_error(input_size))
        return size

    def output_size_or_none(self, input_size: int) -> int | None:
        """Output length for ``input_size``, or ``None`` where the network does not accept it."""
        size, same = input_size, self.config.padding == "same"
        shrink = 0 if same else 4
        for _ in range(self.config.depth):
            size -= shrink
            if size <= 0 or size % 2:
                return None
            size //= 2
        size -= shrink
        up_shrink = 2 if (self.config.upsampling == "interpolate" and not same) else 0
        for _ in range(self.config.depth):
            size = size * 2 - up_shrink - shrink
        return size if size > 0 else None

    def valid_input_size(self, min_size: int) -> int:
        """Smallest input length >= ``min_size`` that the network accepts."""
        size = max(1, min_size)
        if self.config.padding == "same":
            return -(-size // self.size_multiple) * self.size_multiple
        while self.output_size_or_none(size) is None:
            size += 1
        return size

    @property
    def context(self) -> int:
        """Input pixels per side that an output pixel depends on (receptive-field radius).

        For ``"valid"`` networks this is exactly ``(input - output) / 2``; tiles must overlap by
        at least this much (per side) for a tiled prediction to equal an untiled one.
        """
        radius, jump = 0, 1
        for _ in range(self.config.depth):
            radius += 2 * jump  # two 3x3 convs; 2x2 pooling adds no radius at valid sizes
            jump *= 2
        radius += 2 * jump  # bottleneck convs
        for _ in range(self.config.depth):
            jump //= 2
            if self.config.upsampling == "interpolate":
                radius += jump  # the 3x3 conv after interpolation
            radius += 2 * jump
        return radius

    def _size_error(self, input_size: int) -> str:
        return (
            f"input size {input_size} does not fit this U-Net (depth {self.config.depth}, "
            f"padding {self.config.padding!r}); nearest allowed size >= {input_size} is "
            f"{self.valid_input_size(input_size + 1) if input_size > 0 else 1}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, *spatial)`` images to ``(N, classes, *output_spatial)`` logits."""
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.config.depth:
                skips.append(x)
                x = self.pool(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = up(x)
            x = decoder(torch.cat([_center_crop(skip, x.shape[2:]), x], dim=1))
        return self.head(x)
