"""Training data preparation: the train/validation split, patches, batches and their tensors."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.core.augment import Augmenter, Sample
from napari_unet.core.datasets import LabelledImage, PatchSampler, read_pairs
from napari_unet.core.models import ModelDescription
from napari_unet.core.network import UNet
from napari_unet.core.targets import Target

Data = str | os.PathLike[str] | Sequence[np.ndarray]
Pairs = tuple[list[np.ndarray], list[np.ndarray]]


def read_split(
    images: Data,
    masks: Data,
    validation: tuple[Data, Data] | None,
    val_fraction: float,
    seed: int,
) -> tuple[Pairs, Pairs]:
    """Return checked training and validation pairs (``validation``, or a held-out share)."""
    train_images, train_masks = read_pairs(images, masks)
    if validation is not None:
        return (train_images, train_masks), read_pairs(*validation)
    return _split(train_images, train_masks, val_fraction, seed)


def _split(
    images: list[np.ndarray], masks: list[np.ndarray], fraction: float, seed: int
) -> tuple[Pairs, Pairs]:
    """Hold out ``fraction`` of the pairs (at least one when there are two or more)."""
    if fraction <= 0 or len(images) < 2:
        return (images, masks), ([], [])
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = min(len(images) - 1, max(1, round(fraction * len(images))))
    val, keep = sorted(order[:n_val]), sorted(order[n_val:])
    return (
        ([images[i] for i in keep], [masks[i] for i in keep]),
        ([images[i] for i in val], [masks[i] for i in val]),
    )


@dataclass
class Batch:
    """One optimiser step's tensors; ``weights`` and ``distance`` only when the run uses them."""

    inputs: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None
    distance: torch.Tensor | None


@dataclass
class TrainingData:
    """Targets of every image, and the patches and batches drawn from them."""

    training: list[LabelledImage]
    validating: list[LabelledImage]
    sampler: PatchSampler
    augmenter: Augmenter | None
    batch_size: int
    steps_per_epoch: int

    @classmethod
    def build(
        cls,
        train_pairs: Pairs,
        val_pairs: Pairs,
        description: ModelDescription,
        network: UNet,
        *,
        target: Target,
        sparse: bool,
        weight_map: bool,
        augmenter: Augmenter | None,
        patch_shape: int | Sequence[int] | None,
        batch_size: int,
        steps_per_epoch: int | None,
    ) -> TrainingData:
        """Normalise the images and compute their targets as ``description`` says."""

        def labelled(pairs: Pairs) -> list[LabelledImage]:
            return [
                LabelledImage.build(image, mask, description, target, sparse, weight_map)
                for image, mask in zip(*pairs, strict=True)
            ]

        training = labelled(train_pairs)
        patch = patch_size(patch_shape, network, [item.target.shape for item in training])
        if steps_per_epoch is None:
            pixels = sum(item.target.size for item in training)
            steps_per_epoch = max(1, math.ceil(pixels / (math.prod(patch) * batch_size)))
        return cls(
            training,
            labelled(val_pairs),
            PatchSampler(training, patch),
            augmenter,
            batch_size,
            steps_per_epoch,
        )

    def draw(self, rng: np.random.Generator) -> list[Sample]:
        """``batch_size`` random (augmented) patches."""
        batch = [self.sampler.sample(rng) for _ in range(self.batch_size)]
        return batch if self.augmenter is None else [self.augmenter(s, rng) for s in batch]

    def batch(
        self,
        rng: np.random.Generator,
        network: UNet,
        device: torch.device,
        memory_format: torch.memory_format,
    ) -> Batch:
        """Draw a batch and return it as tensors on ``device``."""
        return to_tensors(self.draw(rng), network, device, memory_format)


def patch_size(
    requested: int | Sequence[int] | None, network: UNet, shapes: list[tuple[int, ...]]
) -> tuple[int, ...]:
    """Patch size per axis that the network accepts, no larger than needed for the images."""
    dims = network.spatial_dims
    if requested is None:
        largest = [max(shape[axis] for shape in shapes) for axis in range(dims)]
        requested = [
            min(n, cap)
            for n, cap in zip(largest, (256, 256) if dims == 2 else (32, 128, 128), strict=False)
        ]
    elif isinstance(requested, int):
        requested = [requested] * dims
    if len(requested) != dims:
        raise ValueError(f"patch_shape needs {dims} sizes for a {dims}D network, got {requested}")
    return tuple(network.valid_input_size(int(n)) for n in requested)


def to_tensors(
    batch: list[Sample], network: UNet, device: torch.device, memory_format: torch.memory_format
) -> Batch:
    """Stack a batch; for valid-padding networks the per-pixel arrays are cropped to the output."""
    images = torch.from_numpy(np.stack([sample.image for sample in batch]))
    labels = np.stack([sample.target for sample in batch])
    output = [network.output_size(n) for n in labels.shape[1:]]
    crop = (
        slice(None),
        *[
            slice((n - o) // 2, (n - o) // 2 + o)
            for n, o in zip(labels.shape[1:], output, strict=True)
        ],
    )

    def stacked(field: str) -> torch.Tensor | None:
        if getattr(batch[0], field) is None:
            return None
        array = np.stack([getattr(sample, field) for sample in batch])[crop]
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)

    return Batch(
        images.to(device, memory_format=memory_format),
        torch.from_numpy(labels[crop].astype(np.int64)).to(device),
        stacked("weights"),
        stacked("distance"),
    )
