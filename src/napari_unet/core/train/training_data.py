"""Training data preparation: the train/validation split, patches, batches and their tensors."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_unet.core.io import read_image
from napari_unet.core.models.network import UNet
from napari_unet.core.models.registry import ModelDescription
from napari_unet.core.normalize import model_input
from napari_unet.core.train.augment import Augmenter, Sample
from napari_unet.core.train.copy_paste import paste_objects
from napari_unet.core.train.datasets import (
    LabelledImage,
    PatchSampler,
    check_pair,
    object_ids,
    read_pairs,
)
from napari_unet.core.train.robustness import stain_jitter
from napari_unet.names import TIFF_SUFFIXES, Target

Data = str | os.PathLike[str] | Sequence[np.ndarray]
Pairs = tuple[list[np.ndarray], list[np.ndarray]]


def read_split(
    images: Data,
    masks: Data,
    validation: tuple[Data, Data] | None,
    val_fraction: float,
    seed: int,
    target: Target,
) -> tuple[Pairs, Pairs]:
    """Return checked training and validation pairs (``validation``, or a held-out share).

    For objects, a 1-bit mask's connected regions become its objects here, once, so that
    holding objects out, counting them and training all see the same objects.
    """
    train_images, train_masks = _for_target(read_pairs(images, masks), target)
    if validation is not None:
        return (train_images, train_masks), _for_target(read_pairs(*validation), target)
    return _split(train_images, train_masks, val_fraction, seed)


def _for_target(pairs: Pairs, target: Target) -> Pairs:
    images, masks = pairs
    if target != "instances":
        return images, masks
    return images, [object_ids(mask, f"mask {index}") for index, mask in enumerate(masks)]


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


def read_rehearsal(pairs: tuple[Data, Data], target: Target) -> Pairs:
    """Rehearsal data (labelled images of the base model's kind), checked as training data."""
    return _for_target(read_pairs(*pairs), target)


def read_unlabelled(images: Data, spatial_dims: int) -> list[np.ndarray]:
    """Images without masks (arrays or a folder of TIFFs), checked as training images are."""
    if isinstance(images, str | os.PathLike):
        folder = Path(images)
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no TIFF images in {folder}")
        arrays = [np.asarray(read_image(path, lazy=False).data) for path in paths]
        names = [str(path) for path in paths]
    else:
        arrays = [np.asarray(image) for image in images]
        names = [f"unlabelled image {index}" for index in range(len(arrays))]
    for array, name in zip(arrays, names, strict=True):
        check_pair(array, np.zeros(array.shape[:spatial_dims], np.uint8), name)
    return arrays


@dataclass
class Batch:
    """One optimiser step's tensors; ``weights`` and ``distance`` only when the run uses them."""

    inputs: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None
    distance: torch.Tensor | None


@dataclass
class TrainingData:
    """Targets of every image, and the patches and batches drawn from them.

    Fine-tuning may add images of two other sources: unlabelled images of the user's kind,
    which join the labelled ones only where batch-norm statistics are measured (``draw(...,
    statistics=True)``), and labelled base-model data, a share of every training batch
    (rehearsal), so that the network keeps what it knew while it learns the new images.
    """

    training: list[LabelledImage]
    validating: list[LabelledImage]
    sampler: PatchSampler
    augmenter: Augmenter | None
    batch_size: int
    steps_per_epoch: int
    paste_probability: float = 0.0
    """Chance per patch of copy-paste (instance targets only, as the augmenter asks)."""
    statistics_sampler: PatchSampler | None = None
    """Patches of the labelled and the unlabelled images, when unlabelled ones are given."""
    rehearsal_sampler: PatchSampler | None = None
    rehearsal_count: int = 0
    """Patches of each training batch drawn from the rehearsal data."""

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
        unlabelled: Sequence[np.ndarray] = (),
        rehearsal: Pairs | None = None,
        rehearsal_share: float = 0.0,
    ) -> TrainingData:
        """Normalise the images and compute their targets as ``description`` says."""

        def labelled(pairs: Pairs, sparse: bool = sparse) -> list[LabelledImage]:
            return [
                LabelledImage.build(image, mask, description, target, sparse, weight_map)
                for image, mask in zip(*pairs, strict=True)
            ]

        def sampler(items: list[LabelledImage]) -> PatchSampler:
            return PatchSampler(sampled_items(items, description, augmenter), patch)

        training = labelled(train_pairs)
        patch = patch_size(patch_shape, network, [item.target.shape for item in training])
        if steps_per_epoch is None:
            pixels = sum(item.target.size for item in training)
            steps_per_epoch = max(1, math.ceil(pixels / (math.prod(patch) * batch_size)))
        blank = [np.zeros(image.shape[: network.spatial_dims], np.uint8) for image in unlabelled]
        others = [
            LabelledImage.build(image, mask, description, target, True, False)
            for image, mask in zip(unlabelled, blank, strict=True)
        ]
        rehearsed = labelled(rehearsal, False) if rehearsal is not None else []
        return cls(
            training,
            labelled(val_pairs),
            sampler(training),
            augmenter,
            batch_size,
            steps_per_epoch,
            augmenter.paste_probability if augmenter and target == "instances" else 0.0,
            sampler(training + others) if others else None,
            sampler(rehearsed) if rehearsed else None,
            rehearsal_patches(rehearsal_share, batch_size) if rehearsed else 0,
        )

    def draw(self, rng: np.random.Generator, statistics: bool = False) -> list[Sample]:
        """``batch_size`` random (augmented) patches.

        ``statistics``: patches of the user's images only (labelled and unlabelled), for
        batch-norm statistics; else training patches, rehearsal data included.
        """
        sampler = self.sampler
        if statistics and self.statistics_sampler is not None:
            sampler = self.statistics_sampler
        rehearsed = 0 if statistics or self.rehearsal_sampler is None else self.rehearsal_count
        batch = [sampler.sample(rng) for _ in range(self.batch_size - rehearsed)]
        if statistics:  # only the images count; unlabelled ones have no weights to stack
            batch = [sample._replace(weights=None, distance=None) for sample in batch]
        if rehearsed and self.rehearsal_sampler is not None:
            batch += [self.rehearsal_sampler.sample(rng) for _ in range(rehearsed)]
        if self.paste_probability and self.augmenter is not None:
            count = self.augmenter.paste_count
            batch = [
                paste_objects(sample, batch[:i] + batch[i + 1 :], rng, count)
                if rng.random() < self.paste_probability
                else sample
                for i, sample in enumerate(batch)
            ]
        return batch if self.augmenter is None else [self.augmenter(s, rng) for s in batch]

    def batch(
        self,
        rng: np.random.Generator,
        network: UNet,
        device: torch.device,
        memory_format: torch.memory_format,
        statistics: bool = False,
    ) -> Batch:
        """Draw a batch (see :meth:`draw`) and return it as tensors on ``device``."""
        return to_tensors(self.draw(rng, statistics), network, device, memory_format)


def rehearsal_patches(share: float, batch_size: int) -> int:
    """Patches of a batch taken from rehearsal data: ``share`` of it, at least one, not all."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"rehearsal_share is a share of each batch, above 0 and below 1: {share}")
    return min(batch_size - 1, max(1, round(share * batch_size)))


def sampled_items(
    items: list[LabelledImage], description: ModelDescription, augmenter: Augmenter | None
) -> list[LabelledImage]:
    """Return the items patches are drawn from: with stain variants when the augmenter asks."""
    if augmenter is None or not augmenter.stain_variants:
        return items
    return [copy for item in items for copy in stained(item, description, augmenter)]


def stained(
    item: LabelledImage, description: ModelDescription, augmenter: Augmenter
) -> list[LabelledImage]:
    """Return an image and its ``stain_variants`` other stainings, sharing its targets.

    Every image comes ``1 + stain_variants`` times (gray ones as themselves), so that each
    is still drawn as often. The variants are fixed per run (seeded), since each is
    normalised over the whole image as prediction does.
    """
    count = augmenter.stain_variants
    if not item.axes.endswith("C") or item.source.shape[-1] < 3:
        return [item] * (1 + count)
    rng = np.random.default_rng(0)
    variants = [
        stain_jitter(item.source, rng, augmenter.stain_scale, augmenter.stain_shift)
        for _ in range(count)
    ]
    return [item] + [
        replace(item, image=model_input(variant, item.axes, description)) for variant in variants
    ]


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


HOLD_OUT_SHARE = 0.2
"""Share of the painted objects kept back to check a fine-tune, when no image is held out."""
MIN_OBJECTS_TO_HOLD_OUT = 8
"""Fewer painted objects than this are all needed for training: nothing is held out then."""
HOLD_OUT_MARGIN_PX = 2
"""Background this close to a held-out object is not trained on either (it outlines it)."""


def hold_out_objects(
    masks: list[np.ndarray], sparse: bool, share: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split instance masks into the objects to train on and whole objects kept for a check.

    Returns sparse-convention masks (0 = not annotated, 1 = background, ``>= 2`` objects):
    the training masks with the held-out objects and a thin ring around them unannotated,
    and check masks holding only the held-out objects. Fewer than
    :data:`MIN_OBJECTS_TO_HOLD_OUT` objects hold nothing out (empty check masks).
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout_objects is a share of the painted objects, 0 to <1; got {share}")
    painted = [sparse_convention(mask, sparse) for mask in masks]
    objects = [(index, int(label)) for index, mask in enumerate(painted) for label in _labels(mask)]
    count = round(share * len(objects))
    if len(objects) < MIN_OBJECTS_TO_HOLD_OUT or count == 0:
        return painted, [np.zeros_like(mask) for mask in painted]
    chosen = np.random.default_rng(seed).choice(len(objects), count, replace=False)
    training, checking = [], []
    for index, mask in enumerate(painted):
        held = np.isin(mask, [label for i, label in (objects[k] for k in chosen) if i == index])
        ring = ndi.binary_dilation(held, iterations=HOLD_OUT_MARGIN_PX) & (mask <= 1)
        training.append(np.where(held | ring, 0, mask))
        checking.append(np.where(held, mask, 0))
    return training, checking


def sparse_convention(mask: np.ndarray, sparse: bool) -> np.ndarray:
    """Return an instance mask in the sparse convention: background 1, objects from 2 (int32)."""
    mask = mask.astype(np.int32)
    return mask if sparse else np.where(mask > 0, mask + 1, 1)


def _labels(mask: np.ndarray) -> np.ndarray:
    values = np.unique(mask)
    return values[values >= 2]
