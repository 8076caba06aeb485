"""EM: a small ensemble fine-tuned from the shipped em-membranes, distilled into one network.

    python scripts/distill_em.py member 1        # checkpoints in runs/em-member-1 (resumable)
    python scripts/distill_em.py member 2
    python scripts/distill_em.py distill 1 2     # the student, in runs/em-distilled
    python benchmarks/bench_em_tta.py --model runs/em-distilled/best

Each member is the shipped model fine-tuned on ISBI slices 0-24 with its own seed. The
student starts from the shipped model too and learns the members' averaged probabilities
(each member calibrated as the shipped model is, averaged over the eight flips and
transposes) on the same slices, weighted by the paper's weight map; so it costs one network
at prediction. Run from the repository root; ``NAPARI_UNET_RUNS`` moves ``runs/``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from train_builtin_models import (
    EM_TRAINING,
    PACKAGE_MODELS,
    RUNS,
    isbi_split,
    isbi_train_val,
    printed_progress,
)

from napari_unet.core.device import autocast
from napari_unet.core.evaluate import calibrate_binary_decision
from napari_unet.core.models import Model, load_model, save_model
from napari_unet.core.predict.predictor import Predictor
from napari_unet.core.train import train
from napari_unet.core.train.augment import Augmenter
from napari_unet.core.train.averaging import WeightAverage, first_averaged_epoch
from napari_unet.core.train.checkpoint import BEST_DIR, CHECKPOINT_FILE
from napari_unet.core.train.datasets import LabelledImage, PatchSampler
from napari_unet.core.train.losses import soft_dice
from napari_unet.core.train.targets import IGNORE_INDEX
from napari_unet.core.train.training_data import Batch, to_tensors

MEMBER_TRAINING = {
    **EM_TRAINING,
    "epochs": 15,
    "learning_rate": 5e-4,
    "average_weights": 0.67,
}
"""A member: the shipped model fine-tuned briefly, its last two thirds' weights averaged."""


def train_member(seed: int) -> None:
    """Fine-tune the shipped em-membranes with ``seed``; resumes from its checkpoint."""
    (images, masks), validation = isbi_train_val()
    train(
        images,
        masks,
        validation=validation,
        base_model=PACKAGE_MODELS / "em-membranes",
        seed=seed,
        name=f"em-member-{seed}",
        checkpoint_dir=RUNS / f"em-member-{seed}",
        resume=True,
        progress=printed_progress(time.monotonic()),
        **MEMBER_TRAINING,
    )


STUDENT = {"epochs": 15, "steps_per_epoch": 40, "batch_size": 4, "patch_shape": 256}
"""The student's schedule: a member's, with the members' averaged probabilities as targets."""
STUDENT_RUN = "em-distilled"


def calibrated_member(seed: int, images: list, masks: list) -> Model:
    """A member's best weights with the shipped model's decision calibration."""
    member = load_model(RUNS / f"em-member-{seed}" / BEST_DIR)
    calibrate_binary_decision(member, images, masks)
    return member


def soft_targets(seeds: list[int]) -> np.ndarray:
    """The members' averaged interior probability on each training slice (cached on disk)."""
    cache = RUNS / STUDENT_RUN / f"soft-targets-{'-'.join(map(str, seeds))}.npy"
    if cache.is_file():
        return np.load(cache)
    (images, masks), _ = isbi_train_val()
    total = np.zeros((len(images), *images[0].shape), np.float32)
    for seed in seeds:
        member = calibrated_member(seed, images, masks)
        predictor = Predictor(member, precision="fp32", test_time_augmentation=True)
        for index, image in enumerate(images):
            total[index] += predictor.predict(image, axes="YX", output="probabilities")[1]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, total / len(seeds))
    return total / len(seeds)


def distillation_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Soft cross-entropy to the members' probabilities, weighted by the paper's weight map.

    ``batch.distance`` carries the members' interior probability (augmented with the patch);
    Dice on the true labels keeps thin membranes weighing as much as the interior.
    """
    log_probabilities = logits.float().log_softmax(dim=1)
    interior = batch.distance
    soft = -(interior * log_probabilities[:, 1] + (1 - interior) * log_probabilities[:, 0])
    annotated = (batch.target != IGNORE_INDEX).float()
    weighted = (soft * batch.weights * annotated).sum() / annotated.sum().clamp(min=1)
    return weighted + soft_dice(logits.float(), batch.target)


def student_data(seeds: list[int], student: Model) -> PatchSampler:
    """Training slices with their weight maps and the members' probabilities as targets."""
    (images, masks), _ = isbi_train_val()
    items = [
        replace(
            LabelledImage.build(image, mask, student.description, "semantic", False, True),
            distance=probability,
        )
        for image, mask, probability in zip(images, masks, soft_targets(seeds), strict=True)
    ]
    return PatchSampler(items, (STUDENT["patch_shape"],) * 2)


def distill(seeds: list[int]) -> None:
    """Train the student from the shipped model on the members' probabilities; resumable."""
    folder = RUNS / STUDENT_RUN
    student = load_model(PACKAGE_MODELS / "em-membranes")
    sampler, augmenter = student_data(seeds, student), Augmenter()
    network = student.network.to(memory_format=torch.channels_last).train()
    steps = STUDENT["epochs"] * STUDENT["steps_per_epoch"]
    optimizer = torch.optim.Adam(network.parameters(), lr=MEMBER_TRAINING["learning_rate"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    average = WeightAverage(network)
    parts = {"network": network, "optimizer": optimizer, "scheduler": scheduler}
    first_epoch = resumed(folder / CHECKPOINT_FILE, {**parts, "average": average})
    averaged_from = first_averaged_epoch(STUDENT["epochs"], MEMBER_TRAINING["average_weights"])
    started = time.monotonic()
    for epoch in range(first_epoch, STUDENT["epochs"]):
        rng = np.random.default_rng(1000 + epoch)  # a resumed epoch draws the same patches
        losses = []
        for _ in range(STUDENT["steps_per_epoch"]):
            patches = [augmenter(sampler.sample(rng), rng) for _ in range(STUDENT["batch_size"])]
            batch = to_tensors(patches, network, torch.device("cpu"), torch.channels_last)
            with autocast("cpu", torch.bfloat16):
                loss = distillation_loss(network(batch.inputs), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        if averaged_from is not None and epoch + 1 >= averaged_from:
            average.update(network)
        state = {key: part.state_dict() for key, part in {**parts, "average": average}.items()}
        torch.save({**state, "epoch": epoch + 1}, folder / CHECKPOINT_FILE)
        minutes = (time.monotonic() - started) / 60
        print(f"[{minutes:6.1f} min] epoch {epoch + 1} loss {np.mean(losses):.4f}", flush=True)
    rng = np.random.default_rng(0)
    inputs = (
        torch.from_numpy(np.stack([augmenter(sampler.sample(rng), rng).image for _ in range(4)]))
        for _ in range(10)
    )
    finish_student(student, average.network(inputs), folder)


def resumed(path: Path, parts: dict[str, Any]) -> int:
    """Load every part's state from ``path`` if it exists; return the epoch to start from."""
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, part in parts.items():
        part.load_state_dict(state[key])
    return int(state["epoch"])


def finish_student(student: Model, network: torch.nn.Module, folder: Path) -> None:
    """Calibrate the averaged student's decision as the shipped model's was; save it."""
    student.network.load_state_dict(network.state_dict())
    student.network.eval()
    student.description.name = STUDENT_RUN
    images, masks = isbi_split("train")
    offset = calibrate_binary_decision(student, images, masks)
    student.description.provenance["decision_offset_tuned_on_train"] = offset
    save_model(student, folder / BEST_DIR, overwrite=True)
    print(f"saved {folder / BEST_DIR} (decision offset {offset:+.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["member", "distill"])
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.action == "member":
        for seed in args.seeds:
            train_member(seed)
    else:
        distill(args.seeds)


if __name__ == "__main__":
    main()
