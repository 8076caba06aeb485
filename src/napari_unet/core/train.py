"""The training engine: one ``train`` call used by the CLI, the napari widget and scripts.

It is GUI-free: progress goes to a callback, cancellation comes in through a token, and every
few minutes the full state is checkpointed so a run can be resumed after an interruption.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.core.augment import Augmenter, Sample
from napari_unet.core.averaging import WeightAverage, first_averaged_epoch
from napari_unet.core.datasets import (
    LabelledImage,
    PatchSampler,
    read_pairs,
    semantic_class_count,
)
from napari_unet.core.evaluate import validation_metrics
from napari_unet.core.losses import LossName, segmentation_loss
from napari_unet.core.models import Model, ModelDescription, load_model, save_model
from napari_unet.core.network import UNet, UNetConfig
from napari_unet.core.postprocess import INSTANCE_DEFAULTS
from napari_unet.core.progress import Cancelled, CancelToken, check_cancelled
from napari_unet.core.targets import INSTANCE_CLASSES, Target

CHECKPOINT_FILE = "last.pt"
BEST_DIR = "best"
DEFAULT_NORMALIZATION = {"kind": "percentile", "low": 1.0, "high": 99.8, "rgb": "mean"}


@dataclass
class TrainingProgress:
    """What ``progress`` receives after every step and at the end of every epoch."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    train_loss: float
    val_metrics: dict[str, float] = field(default_factory=dict)


Data = str | os.PathLike[str] | Sequence[np.ndarray]


def train(
    images: Data,
    masks: Data,
    *,
    target: Target = "instances",
    base_model: str | os.PathLike[str] | Model | None = None,
    architecture: UNetConfig | dict[str, Any] | None = None,
    epochs: int = 50,
    patch_shape: int | Sequence[int] | None = None,
    batch_size: int = 8,
    val_fraction: float = 0.2,
    validation: tuple[Data, Data] | None = None,
    learning_rate: float = 1e-3,
    loss: LossName = "ce+dice",
    weight_map: bool = False,
    sparse: bool = False,
    augment: bool = True,
    seed: int = 0,
    device: str = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    name: str = "my-model",
    progress: Callable[[TrainingProgress], None] | None = None,
    cancel: CancelToken | None = None,
    steps_per_epoch: int | None = None,
    class_names: Sequence[str] | None = None,
    normalization: dict[str, Any] | None = None,
    checkpoint_interval_s: float = 300.0,
    average_weights: float = 0.0,
) -> Model:
    """Train a U-Net on image/mask pairs; return its best validation epoch (or its mean).

    Parameters
    ----------
    images, masks
        Lists of arrays (``YX``, ``YXC`` colour, or ``ZYX`` for a 3D architecture) or two
        folders of TIFF files with the same names.
    target
        ``"instances"``: masks hold one label per object, the model learns background,
        interior and boundary. ``"semantic"``: masks hold a class index per pixel.
    base_model
        Fine-tune this model (name, folder or :class:`Model`) instead of starting from scratch.
    architecture
        The network for a new model; default depth 4, 16 base channels, same padding, batch norm.
    patch_shape
        Training patch size per spatial axis; default 256 (2D) or 32x128x128 (3D), capped
        at the image size.
    val_fraction, validation
        Hold out this share of the images (at least one, if two or more are given) for
        validation, unless ``validation=(images, masks)`` gives a separate set.
    weight_map
        Weight the cross-entropy with the paper's map, which stresses thin gaps between objects.
    sparse
        Mask value 0 means "not annotated" and is ignored; see :mod:`napari_unet.core.targets`
        for what the other values mean.
    steps_per_epoch
        Optimiser steps per epoch; default enough patches to cover the training pixels once.
    normalization
        Input normalisation for a new model (default percentile 1-99.8, colour averaged).
    checkpoint_dir, resume
        Where ``last.pt`` (every ``checkpoint_interval_s`` and every epoch) and the best model
        (``best/``) are written; ``resume=True`` continues from ``last.pt`` there.
    average_weights
        Share of the last epochs whose weights are averaged (stochastic weight averaging;
        0.5 averages the second half, 0 turns it off). The mean is then the result and the
        saved best model, rather than the epoch that scored best on the few validation images.
    progress, cancel
        Called with a :class:`TrainingProgress` after each step and epoch; checked every step,
        raising :class:`~napari_unet.core.progress.Cancelled` (checkpoints stay on disk).
    """
    torch.manual_seed(seed)  # first, so that a new network's initial weights are reproducible
    train_images, train_masks = read_pairs(images, masks)
    if validation is not None:
        val_images, val_masks = read_pairs(*validation)
    else:
        train_images, train_masks, val_images, val_masks = _split(
            train_images, train_masks, val_fraction, seed
        )
    model = _initial_model(
        base_model, architecture, target, train_images, train_masks, sparse, class_names, name
    )
    if normalization is not None and base_model is None:
        model.description.normalization = dict(normalization)
    description = model.description

    def labelled(image_list: list[np.ndarray], mask_list: list[np.ndarray]) -> list[LabelledImage]:
        return [
            LabelledImage.build(image, mask, description, target, sparse, weight_map)
            for image, mask in zip(image_list, mask_list, strict=True)
        ]

    training, validating = labelled(train_images, train_masks), labelled(val_images, val_masks)
    network = model.network
    patch = _patch_shape(patch_shape, network, [item.target.shape for item in training])
    sampler = PatchSampler(training, patch)
    augmenter = Augmenter() if augment else None
    if steps_per_epoch is None:
        pixels = sum(item.target.size for item in training)
        steps_per_epoch = max(1, math.ceil(pixels / (math.prod(patch) * batch_size)))

    torch_device = _resolve_device(device)
    rng = np.random.default_rng(seed)
    channels_last = torch.channels_last if network.spatial_dims == 2 else torch.contiguous_format
    network.to(torch_device, memory_format=channels_last)
    first_average = first_averaged_epoch(epochs, average_weights)
    average = WeightAverage(network) if first_average is not None else None
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, total_steps))
    use_amp = torch_device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    run = _RunState()
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and folder is not None and (folder / CHECKPOINT_FILE).is_file():
        run = _load_checkpoint(
            folder / CHECKPOINT_FILE, network, optimizer, scheduler, rng, average
        )
    last_save = time.monotonic()

    def save_last() -> None:
        if folder is not None:
            _save_checkpoint(
                folder / CHECKPOINT_FILE, run, network, optimizer, scheduler, rng, average
            )

    try:
        while run.epoch < epochs:
            network.train()
            while run.step < steps_per_epoch:
                check_cancelled(cancel)
                inputs, labels, weights = _to_tensors(
                    _draw_batch(sampler, augmenter, rng, batch_size),
                    network,
                    torch_device,
                    channels_last,
                )
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(torch_device.type, enabled=use_amp):
                    logits = network(inputs)
                step_loss = segmentation_loss(logits.float(), labels, weights, loss)
                if not torch.isfinite(step_loss):
                    raise _diverged("loss", run, folder, learning_rate)
                scaler.scale(step_loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                run.step += 1
                run.loss_sum += step_loss.item()
                if progress is not None:
                    progress(
                        TrainingProgress(
                            run.epoch + 1, epochs, run.step, steps_per_epoch, step_loss.item()
                        )
                    )
                if folder is not None and time.monotonic() - last_save > checkpoint_interval_s:
                    _check_finite(network, run, folder, learning_rate)
                    save_last()
                    last_save = time.monotonic()
            train_loss = run.loss_sum / steps_per_epoch
            _check_finite(network, run, folder, learning_rate)
            if average is not None and run.epoch + 1 >= first_average:
                average.update(network)
            metrics = (
                validation_metrics(Model(description, network), validating, str(torch_device))
                if validating
                else {}
            )
            metrics["train_loss"] = train_loss
            score = (metrics.get("score", 0.0), -train_loss)  # ties go to the lower loss
            run.history.append(metrics)
            run.epoch, run.step, run.loss_sum = run.epoch + 1, 0, 0.0
            if score > run.best_score:
                run.best_score, run.best_metrics = score, metrics
                run.best_state = {
                    k: v.detach().cpu().clone() for k, v in network.state_dict().items()
                }
                if folder is not None:
                    save_model(
                        _finished(description, network, metrics, run),
                        folder / BEST_DIR,
                        overwrite=True,
                    )
            save_last()
            last_save = time.monotonic()
            if progress is not None:
                progress(
                    TrainingProgress(
                        run.epoch, epochs, steps_per_epoch, steps_per_epoch, train_loss, metrics
                    )
                )
    except Cancelled:
        save_last()
        raise
    if average is not None and average.count:
        normalising = (
            _to_tensors(
                _draw_batch(sampler, augmenter, rng, batch_size),
                network,
                torch_device,
                channels_last,
            )[0]
            for _ in range(min(steps_per_epoch, 50))
        )
        averaged = average.network(normalising)
        metrics = (
            validation_metrics(Model(description, averaged), validating, str(torch_device))
            if validating
            else {}
        )
        metrics["averaged_epochs"] = float(average.count)
        run.best_metrics = metrics
        run.best_state = {k: v.detach().cpu().clone() for k, v in averaged.state_dict().items()}
        if folder is not None:
            save_model(
                _finished(description, averaged, metrics, run), folder / BEST_DIR, overwrite=True
            )
    if run.best_state is not None:
        network.load_state_dict(run.best_state)
    elif folder is not None and (folder / BEST_DIR).is_dir():
        network.load_state_dict(load_model(folder / BEST_DIR).network.state_dict())
    return _finished(description, network, run.best_metrics, run)


def _check_finite(network: UNet, run: _RunState, folder: Path | None, learning_rate: float) -> None:
    """Refuse to checkpoint or validate weights that a step has made NaN or infinite."""
    if not all(torch.isfinite(value).all() for value in network.parameters()):
        raise _diverged("weights", run, folder, learning_rate)


def _diverged(what: str, run: _RunState, folder: Path | None, learning_rate: float) -> Exception:
    """Return the error that stops a run gone non-finite; what is on disk predates it."""
    kept = (
        f"; the last good checkpoint stays in {folder} (resume=True continues from it)"
        if folder is not None
        else ""
    )
    return FloatingPointError(
        f"training stopped: the {what} became NaN or infinite at epoch {run.epoch + 1}, "
        f"step {run.step + 1}{kept}. The data were checked for NaN and infinity, so try a "
        f"lower learning rate than {learning_rate:g}"
    )


@dataclass
class _RunState:
    """Where a run stands; everything here is checkpointed."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def _finished(
    description: ModelDescription, network: UNet, metrics: dict[str, float], run: _RunState
) -> Model:
    """Copy the network to the CPU in eval mode, its card carrying the validation metrics."""
    copy = UNet(description.architecture)
    copy.load_state_dict({k: v.detach().cpu() for k, v in network.state_dict().items()})
    copy.eval()
    card = ModelDescription.from_dict(description.to_dict())
    card.metrics = {"validation": dict(metrics)}
    card.provenance = {**card.provenance, "epochs_trained": run.epoch}
    return Model(card, copy)


def _split(
    images: list[np.ndarray], masks: list[np.ndarray], fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Hold out ``fraction`` of the pairs (at least one when there are two or more)."""
    if fraction <= 0 or len(images) < 2:
        return images, masks, [], []
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = min(len(images) - 1, max(1, round(fraction * len(images))))
    val, keep = sorted(order[:n_val]), sorted(order[n_val:])
    return (
        [images[i] for i in keep],
        [masks[i] for i in keep],
        [images[i] for i in val],
        [masks[i] for i in val],
    )


def _initial_model(
    base_model: str | os.PathLike[str] | Model | None,
    architecture: UNetConfig | dict[str, Any] | None,
    target: Target,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    sparse: bool,
    class_names: Sequence[str] | None,
    name: str,
) -> Model:
    """Choose the model to start from: a copy of ``base_model`` renamed, or a fresh network."""
    if target not in ("instances", "semantic"):
        raise ValueError(f"target must be 'instances' or 'semantic', not {target!r}")
    base = load_model(base_model) if base_model is not None else None
    if target == "instances":
        names = list(INSTANCE_CLASSES)
    elif class_names is not None:
        names = list(class_names)
        needed = semantic_class_count(masks, sparse)
        if needed > len(names):
            raise ValueError(
                f"the masks hold {needed} classes but class_names names {len(names)}: {names}"
            )
    else:
        n_classes = semantic_class_count(masks, sparse)
        inherited = base.description.class_names if base is not None else []
        names = (
            inherited if len(inherited) >= n_classes else [f"class {k}" for k in range(n_classes)]
        )
    if base is not None:
        if target == "instances" and base.description.output_kind != "instances":
            raise ValueError(f"base model {base.name!r} is semantic; it cannot learn instances")
        card = ModelDescription.from_dict(base.description.to_dict())
        state = base.network.state_dict()
        if card.architecture.out_channels != len(names):
            # a new set of classes: keep the learned features, start a fresh output layer
            card.architecture = UNetConfig.from_dict(
                {**card.architecture.to_dict(), "out_channels": len(names)}
            )
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        card.class_names = names
        network = UNet(card.architecture)
        network.load_state_dict(state, strict=False)
        card.name, card.metrics = name, {}
        card.provenance = {**card.provenance, "fine_tuned_from": base.name}
        return Model(card, network)
    spatial_dims = 3 if masks[0].ndim == 3 else 2
    defaults = {
        "spatial_dims": spatial_dims,
        "in_channels": 1,
        "out_channels": len(names),
        "depth": 4 if spatial_dims == 2 else 3,
        "base_channels": 16,
        "padding": "same",
        "norm": "batch",
    }
    if isinstance(architecture, UNetConfig):
        architecture = architecture.to_dict()
    config = UNetConfig.from_dict({**defaults, **(architecture or {})})
    card = ModelDescription(
        name=name,
        architecture=config,
        output_kind="instances" if target == "instances" else "semantic",
        class_names=names,
        normalization=dict(DEFAULT_NORMALIZATION),
        postprocess=dict(INSTANCE_DEFAULTS) if target == "instances" else {},
        provenance={"trained_with": "napari_unet.core.train.train"},
    )
    return Model.create(card)


def _patch_shape(
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


def _draw_batch(
    sampler: PatchSampler, augmenter: Augmenter | None, rng: np.random.Generator, size: int
) -> list[Sample]:
    batch = [sampler.sample(rng) for _ in range(size)]
    return batch if augmenter is None else [augmenter(sample, rng) for sample in batch]


def _to_tensors(
    batch: list[Sample], network: UNet, device: torch.device, memory_format: torch.memory_format
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack a batch; for valid-padding networks crop targets to the smaller output."""
    images = torch.from_numpy(np.stack([sample[0] for sample in batch]))
    labels = np.stack([sample[1] for sample in batch])
    weights = None if batch[0][2] is None else np.stack([sample[2] for sample in batch])
    output = [network.output_size(n) for n in labels.shape[1:]]
    crop = (
        slice(None),
        *[
            slice((n - o) // 2, (n - o) // 2 + o)
            for n, o in zip(labels.shape[1:], output, strict=True)
        ],
    )
    target = torch.from_numpy(labels[crop].astype(np.int64)).to(device)
    weight = (
        None
        if weights is None
        else torch.from_numpy(np.ascontiguousarray(weights[crop])).to(device)
    )
    return images.to(device, memory_format=memory_format), target, weight


def _cosine(step: int, total: int) -> float:
    """Learning-rate factor: short linear warm-up, then cosine decay to 2 %."""
    warmup = max(1, min(100, total // 20))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _save_checkpoint(
    path: Path,
    run: _RunState,
    network: UNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    average: WeightAverage | None,
) -> None:
    """Write the whole training state atomically (tensors and plain values only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "run": {k: v for k, v in vars(run).items() if k != "best_state"},
        "best_state": run.best_state,
        "average": None if average is None else average.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(
    path: Path,
    network: UNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    average: WeightAverage | None,
) -> _RunState:
    """Restore what :func:`_save_checkpoint` wrote; loads tensors only, never code."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state["network"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    if average is not None and state.get("average") is not None:
        average.load_state_dict(state["average"])
    return _RunState(**state["run"], best_state=state["best_state"])
