"""One forward pass: the network prepared for inference, batches halved when out of memory.

Kept apart from the tiling and blocks around it, so the engine's speed tricks (channels-last
memory, batch norm folded into convolutions, autocast) live in one place.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_unet.core.device import autocast, is_out_of_memory
from napari_unet.core.models.network import UNet


class OutOfMemoryForTile(Exception):
    """One tile alone did not fit: the caller shrinks tiles or changes device and starts over."""


@dataclass
class RunSettings:
    """What one call may change while it runs (out-of-memory ladder), never the Predictor."""

    device: str
    network: UNet
    autocast_dtype: torch.dtype | None
    tile_shape: tuple[int, ...] | None
    batch_size: int | None
    forward_pixels: int


def forward(inputs: np.ndarray, settings: RunSettings) -> np.ndarray:
    """Logits ``(B, K, *tile_out)`` as float32 numpy; halves the batch when out of memory."""
    failure: BaseException | None = None
    try:
        with torch.inference_mode(), autocast(settings.device, settings.autocast_dtype):
            x = torch.from_numpy(inputs).to(settings.device)
            memory_format = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=memory_format)
            return settings.network(x).float().cpu().numpy()
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        failure = error
    # Out of memory: retry outside the except block, so the failed batch can be freed.
    _free_device_memory(settings.device)
    if len(inputs) == 1:
        raise OutOfMemoryForTile(str(failure))
    half = (len(inputs) + 1) // 2
    warnings.warn(
        f"napari-unet: out of memory on {settings.device} with {len(inputs)} tiles per "
        f"batch; retrying with {half}",
        RuntimeWarning,
        stacklevel=2,
    )
    settings.batch_size = half
    return np.concatenate([forward(inputs[:half], settings), forward(inputs[half:], settings)])


def inference_network(network: UNet, device: str) -> UNet:
    """Copy ``network`` for prediction: eval mode, on ``device``, channels-last memory.

    Batch norm is folded into the convolution before it: one pass over the data, not two.
    """
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for i, (conv, norm) in enumerate(itertools.pairwise(layers)):
                if isinstance(conv, nn.Conv2d | nn.Conv3d) and isinstance(
                    norm, nn.BatchNorm2d | nn.BatchNorm3d
                ):
                    module[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, norm)
                    module[i + 1] = nn.Identity()
    memory_format = torch.channels_last if network.spatial_dims == 2 else torch.channels_last_3d
    return network.to(device).to(memory_format=memory_format)


def _free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()
