"""Fine-tuning on ONE labelled image of a new kind, in a few minutes: what does it buy?

    python benchmarks/bench_finetune.py                      # from the unseen-kind model
    python benchmarks/bench_finetune.py --start nuclei       # from the built-in model
    python benchmarks/bench_finetune.py --minutes 5 --images 3
    python benchmarks/bench_finetune.py --images 3 --calibrate --no-freeze-encoder --zoom 1 \
        --average-weights 0 --oracle                        # the previous defaults, and more
    python benchmarks/bench_finetune.py --images 5 --unlabelled 4 --rehearsal 24  # issue 24

The "new kind" is DSB histology (see docs/training.md). ``--start`` defaults to
``runs/unseen-distance/best``, the built-in recipe trained without any histology (scripts/
train_builtin_models.py), so histology is truly new to it; the built-in ``nuclei`` has seen
58 histology images and shows what is left to gain on a kind it knows.

A start taken from ``runs/`` first gets its thresholds tuned on the 20 non-histology
validation images it was selected on, as an exported model would. For each of ``--images``
histology training images (the first ones in the split), the start model is fine-tuned on
that image alone through the same ``train`` call as the CLI and the Train widget (``minutes``
budget and the other defaults for fine-tuning: the contracting path frozen, zoom
augmentation, the second half's weights averaged, the start's thresholds kept since no
image is held out, a fifth of the image's nuclei held out to check the result), and AP@0.5
on the 20 histology validation images is measured before and after, paired over images
(bootstrap 95 % CI). Each run also prints its own check (the start and the result scored on
the held-out nuclei), to compare its verdict with the 20 images'. Wall time includes
everything ``train`` does.

Issue 24's draws: ``--unlabelled K`` also gives the next K histology training images (after
the labelled one, without masks) as ``unlabelled_images`` for the batch-norm statistics, and
``--rehearsal N`` mixes patches of N images of the start's own training data (DSB without
histology) into each batch. The summary gives the mean and worst gain over the draws, and
what they become when a result whose own check says "worse" is not kept (gain 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_representation import paired_interval
from train_builtin_models import RUNS, UNSEEN_KIND, dsb_split, dsb_without_unseen_kind, sampled

from napari_unet.core.evaluate import image_scores, tune_instance_postprocess
from napari_unet.core.models.registry import Model, load_model
from napari_unet.core.train.augment import Augmenter
from napari_unet.core.train.loop import train


def of_kind(split: str) -> tuple[list, list]:
    images, masks, kinds = dsb_split(split)
    keep = [i for i, kind in enumerate(kinds) if kind == UNSEEN_KIND]
    return [images[i] for i in keep], [masks[i] for i in keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default=str(RUNS / "unseen-distance" / "best"))
    parser.add_argument("--minutes", type=float, default=4.5)
    parser.add_argument(
        "--steps",
        type=int,
        help="train this many steps instead of --minutes (the same work whatever the load)",
    )
    parser.add_argument("--images", type=int, default=1, help="repeat with this many images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, help="default: train()'s for fine-tuning")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--no-weight-map",
        dest="weight_map",
        action="store_false",
        default=None,
        help="fine-tune without the paper's border weights (default: with them)",
    )
    parser.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tune the thresholds on the one image (default: train()'s, which keeps the start's)",
    )
    parser.add_argument(
        "--freeze-encoder",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the expanding path only (default: train()'s, on when fine-tuning)",
    )
    parser.add_argument("--zoom", type=float, help="zoom range (default: train()'s, 1.25)")
    parser.add_argument("--average-weights", type=float, help="default: train()'s, 0.5")
    parser.add_argument(
        "--holdout-objects", type=float, help="share of nuclei held out (default: train()'s, 0.2)"
    )
    parser.add_argument(
        "--rgb",
        choices=["mean", "hematoxylin"],
        help="colour to one channel (default: the start's)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also score with thresholds tuned on the validation images (no user has those)",
    )
    parser.add_argument("--patch", type=int, help="default: train()'s (256, capped at the image)")
    parser.add_argument(
        "--unlabelled",
        type=int,
        default=0,
        help="give the next N histology training images, without masks, as unlabelled_images",
    )
    parser.add_argument(
        "--rehearsal",
        type=int,
        default=0,
        help="rehearse N images of the start's training data (DSB without histology)",
    )
    parser.add_argument("--rehearsal-share", type=float, default=0.25)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_images, train_masks = of_kind("train")
    val_images, val_masks = of_kind("val")
    start = load_model(args.start)
    if Path(args.start).resolve().is_relative_to(RUNS.resolve()):
        # a training run's card has untuned thresholds: tune them where the run was
        # validated, as the export of a shipped model does, so "before" is not handicapped
        _, seen = dsb_without_unseen_kind()
        start.description.postprocess = tune_instance_postprocess(start, *seen)
    if args.rgb is not None:
        start.description.normalization["rgb"] = args.rgb
    augment = True if args.zoom is None else Augmenter(zoom_range=args.zoom)
    before = np.array([s["ap50"] for s in image_scores(start, val_images, val_masks)])
    print(f"start {args.start}: AP@0.5 {before.mean():.3f} on {len(val_images)} images")
    results = {"start": args.start, "before": float(before.mean()), "runs": []}
    rehearsal = sampled(dsb_without_unseen_kind()[0], args.rehearsal) if args.rehearsal else None
    for index in range(args.images):
        started = time.monotonic()
        others = [train_images[(index + 1 + k) % len(train_images)] for k in range(args.unlabelled)]
        tuned = train(
            [train_images[index]],
            [train_masks[index]],
            base_model=start,
            minutes=None if args.steps else args.minutes,
            epochs=args.steps,
            steps_per_epoch=1 if args.steps else None,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            patch_shape=args.patch,
            weight_map=args.weight_map,
            calibrate=args.calibrate,
            freeze_encoder=args.freeze_encoder,
            augment=augment,
            average_weights=args.average_weights,
            holdout_objects=args.holdout_objects,
            unlabelled_images=others or None,
            rehearsal=rehearsal,
            rehearsal_share=args.rehearsal_share,
            name="fine-tuned",
        )
        seconds = time.monotonic() - started
        results["runs"].append(scored(tuned, index, before, seconds, args.oracle))
    summarise(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


def scored(tuned: Model, index: int, before: np.ndarray, seconds: float, oracle: bool) -> dict:
    """Score a fine-tuned model on the histology validation images, paired with the start."""
    val_images, val_masks = of_kind("val")
    check = tuned.description.metrics.get("fine_tuning", {})
    after = np.array([s["ap50"] for s in image_scores(tuned, val_images, val_masks)])
    low, high = paired_interval(before, after)
    print(
        f"image {index}: AP@0.5 {before.mean():.3f} -> "
        f"{after.mean():.3f}, gain {after.mean() - before.mean():+.3f} "
        f"[{low:+.3f}, {high:+.3f}] in {seconds / 60:.1f} min "
        f"(thresholds {json.dumps(tuned.description.postprocess)}); its own check: "
        f"{check.get('base_score')} -> {check.get('score')} on {check.get('held_out')}",
        flush=True,
    )
    if oracle:
        tuned.description.postprocess = tune_instance_postprocess(tuned, val_images, val_masks)
        best = np.mean([s["ap50"] for s in image_scores(tuned, val_images, val_masks)])
        print(f"  with thresholds tuned on the validation images: gain {best - before.mean():+.3f}")
    return {
        "image": index,
        "after": float(after.mean()),
        "gain": float(after.mean() - before.mean()),
        "ci95": [low, high],
        "minutes": seconds / 60,
        "check": check,
    }


def summarise(results: dict) -> None:
    """Print the mean and worst gain, and what they are when a worse check keeps the start."""
    gains = np.array([run["gain"] for run in results["runs"]])
    kept = np.array(
        [0.0 if run["check"].get("verdict") == "worse" else run["gain"] for run in results["runs"]]
    )
    results["mean_gain"], results["worst_gain"] = float(gains.mean()), float(gains.min())
    results["mean_gain_start_kept_when_worse"] = float(kept.mean())
    print(
        f"mean gain over {len(gains)} draw(s): {gains.mean():+.3f}, worst {gains.min():+.3f}; "
        f"keeping the start when the check says worse: mean {kept.mean():+.3f}, "
        f"worst {kept.min():+.3f}"
    )


if __name__ == "__main__":
    main()
