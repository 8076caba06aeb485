"""EM: the eight flips and transposes averaged at prediction, paired per held-out slice.

    python benchmarks/bench_em_tta.py                       # the shipped em-membranes
    python benchmarks/bench_em_tta.py --model runs/em-member-1/best --calibrate

Scores ISBI 2012 slices 25-29 (held out from every EM recipe) with
:func:`napari_unet.core.evaluate.evaluate`, once plainly and once with test-time augmentation,
and prints per slice and overall the interior IoU, adapted Rand error and pixel error of both,
the paired differences, and the seconds each took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from train_builtin_models import PACKAGE_MODELS, isbi_split

from napari_unet.core.evaluate import calibrate_binary_decision, evaluate
from napari_unet.core.models import load_model

METRICS = ("iou_interior", "rand_error", "pixel_error")
SLICES = range(25, 30)


def scores(model: Any, enabled: bool) -> tuple[dict[str, Any], float]:
    """Per-slice and overall scores of the held-out slices, and the seconds they took."""
    images, masks = isbi_split("val")
    started = time.perf_counter()
    model.description.test_time_augmentation = enabled  # what the Predictor does by default
    results = evaluate(images, masks, model, groups=[f"slice {z}" for z in SLICES])
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(PACKAGE_MODELS / "em-membranes"))
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="first calibrate the decision on slices 0-24, as the export does (training runs)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.calibrate:
        print(f"decision offset {calibrate_binary_decision(model, *isbi_split('train')):+.1f}")
    plain, plain_s = scores(model, False)
    tta, tta_s = scores(model, True)
    for group in plain:
        cells = "  ".join(
            f"{key} {plain[group][key]:.4f} -> {tta[group][key]:.4f} "
            f"({tta[group][key] - plain[group][key]:+.4f})"
            for key in METRICS
        )
        print(f"{group:<9} {cells}")
    print(f"seconds for the 5 slices: plain {plain_s:.1f}, eight symmetries {tta_s:.1f}")
    if args.json:
        figures = {"plain": plain, "tta": tta, "seconds": {"plain": plain_s, "tta": tta_s}}
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
