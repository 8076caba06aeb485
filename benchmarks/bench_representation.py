"""Paired comparison of instance representations: boundary classes vs boundary + distance.

    python benchmarks/bench_representation.py unseen    # models trained without histology
    python benchmarks/bench_representation.py shipped   # old (boundaries) vs new built-in nuclei
    python benchmarks/bench_representation.py unseen --runs unseen-distance unseen-distance-robust

``unseen``: ``runs/unseen-boundaries`` and ``runs/unseen-distance`` (scripts/
train_builtin_models.py) are the same 16-channel network and schedule, trained on the DSB
training images except histology. Each model's thresholds are tuned on the 20 validation
images it was selected on (none of them histology); it is then scored on every DSB histology
image (the "unseen kind", 78 images) and on the other validation images.

``shipped``: the previous built-in ``nuclei`` (boundaries; stage ``nuclei-boundaries`` of
the script, whose ``runs/`` folder holds its package copy) against a distance version of it
(``--run``, default ``nuclei``: the built-in now), on the 100 DSB validation images. Each keeps
the thresholds of its card when it has tuned ones (the exported models: tuned on these
images); a run that was not exported gets its own tuned there the same way.

Printed: AP@0.5 per group for each model and the paired difference (B - A) with a bootstrap
95 % confidence interval over images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from train_builtin_models import (
    RUNS,
    UNSEEN_KIND,
    dsb_split,
    dsb_without_unseen_kind,
)

from napari_unet.core.evaluate import image_scores, tune_instance_postprocess
from napari_unet.core.models.registry import Model, load_model
from napari_unet.core.predict.postprocess import object_labeller
from napari_unet.core.predict.predictor import Predictor


def paired_interval(a: np.ndarray, b: np.ndarray, draws: int = 10_000) -> tuple[float, float]:
    """Bootstrap 95 % interval of mean(b - a) over images drawn with replacement."""
    differences = b - a
    rng = np.random.default_rng(0)
    means = differences[rng.integers(0, len(differences), (draws, len(differences)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def postprocess_seconds_per_megapixel(model: Model, images: list) -> float:
    """Seconds that turning probabilities into objects takes per megapixel of ``images``."""
    predictor = Predictor(model, precision="fp32")
    label, thresholds = object_labeller(model.description)
    seconds, pixels = 0.0, 0
    for image in images:
        probabilities = predictor.predict(image, output="probabilities")
        started = time.perf_counter()
        label(probabilities, **thresholds)
        seconds += time.perf_counter() - started
        pixels += probabilities[0].size
    return seconds / (pixels / 1e6)


def compare(
    models: dict[str, Model], groups: dict[str, tuple[list, list]]
) -> dict[str, dict[str, float]]:
    """Score both models on every group; print AP@0.5 and the paired difference."""
    (name_a, model_a), (name_b, model_b) = models.items()
    results = {}
    for group, (images, masks) in groups.items():
        started = time.monotonic()
        ap_a = np.array([s["ap50"] for s in image_scores(model_a, images, masks)])
        ap_b = np.array([s["ap50"] for s in image_scores(model_b, images, masks)])
        low, high = paired_interval(ap_a, ap_b)
        results[group] = {
            name_a: float(ap_a.mean()),
            name_b: float(ap_b.mean()),
            "difference": float((ap_b - ap_a).mean()),
            "ci95": [low, high],
            "images": len(images),
        }
        print(
            f"{group:<28} {name_a} {ap_a.mean():.3f}  {name_b} {ap_b.mean():.3f}  "
            f"difference {(ap_b - ap_a).mean():+.3f} [{low:+.3f}, {high:+.3f}]  "
            f"({len(images)} images, {time.monotonic() - started:.0f} s)",
            flush=True,
        )
    return results


def unseen_groups() -> dict[str, tuple[list, list]]:
    """The unseen kind (all histology) and the rest of the validation split."""
    groups: dict[str, tuple[list, list]] = {}
    for split in ("train", "val"):
        images, masks, kinds = dsb_split(split)
        for image, mask, kind in zip(images, masks, kinds, strict=True):
            name = f"{kind} (unseen kind)" if kind == UNSEEN_KIND else f"{kind} val"
            if kind == UNSEEN_KIND or split == "val":
                pair = groups.setdefault(name, ([], []))
                pair[0].append(image)
                pair[1].append(mask)
    return groups


def validation_groups() -> dict[str, tuple[list, list]]:
    """The DSB validation split by modality, and overall."""
    images, masks, kinds = dsb_split("val")
    groups = {"overall": (images, masks)}
    for kind in sorted(set(kinds)):
        keep = [i for i, k in enumerate(kinds) if k == kind]
        groups[kind] = ([images[i] for i in keep], [masks[i] for i in keep])
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", choices=["unseen", "shipped"])
    parser.add_argument(
        "--run",
        default="nuclei",
        help="shipped: the distance run in runs/ to compare with the built-in nuclei",
    )
    parser.add_argument(
        "--runs",
        nargs=2,
        default=["unseen-boundaries", "unseen-distance"],
        metavar=("A", "B"),
        help="unseen: the two runs compared (e.g. unseen-distance unseen-distance-robust)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="unseen: B averages over the eight flips and transposes (A = B: with and without)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.comparison == "unseen":
        _, (tune_images, tune_masks) = dsb_without_unseen_kind()
        models = {}
        for index, name in enumerate(args.runs):
            model = load_model(RUNS / name / "best")
            model.description.test_time_augmentation = args.tta and index == 1
            model.description.postprocess = tune_instance_postprocess(
                model, tune_images, tune_masks
            )
            print(f"{name}: thresholds {json.dumps(model.description.postprocess)}", flush=True)
            label = name.removeprefix("unseen-")
            models[f"{label} +tta" if model.description.test_time_augmentation else label] = model
        groups = unseen_groups()
        results = compare(models, groups)
        unseen = groups[f"{UNSEEN_KIND} (unseen kind)"][0]
        for name, model in models.items():
            speed = postprocess_seconds_per_megapixel(model, unseen)
            results[f"postprocess s/MP {name}"] = {"seconds_per_megapixel": speed}
            print(f"{name}: post-processing {speed:.3f} s per megapixel ({UNSEEN_KIND})")
    else:
        if args.run == "nuclei":
            distance = load_model("nuclei")  # the exported copy: float16, tuned thresholds
        else:
            distance = load_model(RUNS / args.run / "best")
            images, masks = validation_groups()["overall"]
            distance.description.postprocess = tune_instance_postprocess(distance, images, masks)
        boundaries = load_model(RUNS / "nuclei-boundaries" / "best")
        models = {"boundaries": boundaries, "distance": distance}
        results = compare(models, validation_groups())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
