"""Stochastic weight averaging (Izmailov et al. 2018): the mean of the weights of the last epochs.

Why: on the few validation images a user has, the score of a run swings by several points
from one epoch to the next, so the "best epoch" is partly luck. The mean of the weights
visited over the last epochs sits in a flatter, better-generalising spot. On ISBI 2012 it
lowered the adapted Rand error of the built-in membrane model by a quarter (docs/training.md).
Batch-norm statistics do not average; they are measured again on training patches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from napari_unet.core.network import UNet


def first_averaged_epoch(epochs: int, share: float) -> int | None:
    """Return the 1-based epoch from which weights are averaged, or None when ``share`` is 0.

    ``share`` is the fraction of the run, counted from its end, whose epochs are averaged.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"average_weights is a share of the epochs, 0 to 1; got {share}")
    if share == 0.0 or epochs == 0:
        return None
    return epochs - max(1, math.ceil(share * epochs)) + 1


class WeightAverage:
    """A running mean of a network's weights, kept beside the network being trained."""

    def __init__(self, network: UNet) -> None:
        self._averaged = AveragedModel(network)

    @property
    def count(self) -> int:
        """How many snapshots the mean holds."""
        return int(self._averaged.n_averaged)

    def update(self, network: UNet) -> None:
        """Add the current weights of ``network`` to the mean."""
        self._averaged.update_parameters(network)

    def network(self, batches: Iterable[torch.Tensor]) -> UNet:
        """Return the averaged network, its batch-norm statistics measured on ``batches``."""
        network = self._averaged.module
        update_bn(batches, network)
        network.eval()
        return network

    def state_dict(self) -> dict[str, Any]:
        """Tensors only, for the training checkpoint."""
        return self._averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the mean from a training checkpoint."""
        self._averaged.load_state_dict(state)
