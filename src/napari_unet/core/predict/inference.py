"""One forward pass: the network prepared for inference, batches halved when out of memory.

Kept apart from the tiling and blocks around it, so the engine's speed tricks (channels-last
memory, batch norm folded into convolutions, autocast) live in one place.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_unet.core.device import autocast, is_out_of_memory
from napari_unet.core.models.network import UNet
from napari_unet.core.predict.postprocess import class_channels, instance_source


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
    augmentation: SymmetryAveraging | None = None
    """Average every tile over the eight flips and transposes of its YX plane (8x the time)."""


@dataclass(frozen=True)
class SymmetryAveraging:
    """How a model's outputs are averaged over the eight symmetries of the YX plane.

    The network sees every tile flipped and transposed in the eight ways that map a square
    onto itself; each output is mapped back and turned into probabilities, the eight are
    averaged, and the average is returned as logits again, so that activation and
    post-processing downstream read the averaged probabilities.
    """

    classes: int
    """Leading output channels that are classes (a softmax over them)."""
    regression: str | None = None
    """What follows the classes: ``"distance"`` (a sigmoid) or ``"flows"`` (vectors)."""

    def average(self, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Logits of the averaged probabilities of ``run`` over the eight symmetries of ``x``."""
        total = sum(self._restored(run(_transformed(x, *s)), s) for s in SYMMETRIES)
        return self._logits(total / len(SYMMETRIES))

    def _restored(self, logits: torch.Tensor, symmetry: tuple[bool, bool, bool]) -> torch.Tensor:
        """Probabilities of a transformed tile's output, mapped back to the tile's frame."""
        outputs = self._probabilities(_restored(logits, *symmetry))
        if self.regression == "flows":
            _restore_vectors(outputs[:, self.classes :], *symmetry)
        return outputs

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        classes = logits[:, : self.classes].softmax(dim=1)
        rest = logits[:, self.classes :]
        return torch.cat([classes, rest.sigmoid() if self.regression == "distance" else rest], 1)

    def _logits(self, probabilities: torch.Tensor) -> torch.Tensor:
        # log p is a logit vector whose softmax is p; the distance's sigmoid is undone likewise
        classes = probabilities[:, : self.classes].clamp(min=1e-7).log()
        rest = probabilities[:, self.classes :]
        if self.regression == "distance":
            rest = rest.clamp(1e-7, 1 - 1e-7).logit()
        return torch.cat([classes, rest], dim=1)


SYMMETRIES = tuple(itertools.product((False, True), repeat=3))
"""(transpose YX, flip Y, flip X): the eight symmetries of a square."""


def _transformed(x: torch.Tensor, transpose: bool, flip_y: bool, flip_x: bool) -> torch.Tensor:
    """Transpose the YX plane of ``(B, C, ..., Y, X)`` first, then flip."""
    x = x.transpose(-1, -2) if transpose else x
    flips = [axis for axis, flip in ((-2, flip_y), (-1, flip_x)) if flip]
    return x.flip(flips) if flips else x


def _restored(y: torch.Tensor, transpose: bool, flip_y: bool, flip_x: bool) -> torch.Tensor:
    """Undo :func:`_transformed` on the network's output: flip back, then transpose."""
    flips = [axis for axis, flip in ((-2, flip_y), (-1, flip_x)) if flip]
    y = y.flip(flips) if flips else y
    return y.transpose(-1, -2) if transpose else y


def _restore_vectors(flows: torch.Tensor, transpose: bool, flip_y: bool, flip_x: bool) -> None:
    """Map flow vectors (Y and X components last) back from the transformed frame, in place."""
    for channel, flip in ((-2, flip_y), (-1, flip_x)):
        if flip:
            flows[:, channel] *= -1
    if transpose:
        flows[:, [-2, -1]] = flows[:, [-1, -2]].clone()


def forward(inputs: np.ndarray, settings: RunSettings) -> np.ndarray:
    """Logits ``(B, K, *tile_out)`` as float32 numpy; halves the batch when out of memory.

    With ``settings.augmentation``, the logits of the averaged probabilities of eight passes.
    """
    failure: BaseException | None = None
    try:
        with torch.inference_mode(), autocast(settings.device, settings.autocast_dtype):
            x = torch.from_numpy(inputs).to(settings.device)
            run = partial(_network_outputs, network=settings.network)
            augmentation = settings.augmentation
            outputs = run(x) if augmentation is None else augmentation.average(x, run)
            return outputs.cpu().numpy()
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


def _network_outputs(x: torch.Tensor, network: UNet) -> torch.Tensor:
    memory_format = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    return network(x.contiguous(memory_format=memory_format)).float()


def symmetry_averaging(description: Any, enabled: bool) -> SymmetryAveraging | None:
    """Return the averaging a model's outputs need, or ``None`` when not ``enabled``.

    Which channels are classes and what follows them comes from the model's card; the
    Predictor passes ``enabled`` from its option, or the card's ``test_time_augmentation``.
    """
    if not enabled:
        return None
    source = instance_source(description)
    regression = source if source in ("distance", "flows") else None
    return SymmetryAveraging(class_channels(description), regression)


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
