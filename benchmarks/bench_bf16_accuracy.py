"""Does bf16 training cost accuracy? The EM stage-1 network trained in bf16 and in fp32.

    python scripts/train_builtin_models.py train em-membranes-base        # bf16 where it is fast
    python scripts/train_builtin_models.py train em-membranes-base-fp32
    python benchmarks/bench_bf16_accuracy.py

Both runs are the same recipe and seed (``em-membranes-base``: 16 channels, 1,200 steps on
ISBI slices 0-24), one under bf16 autocast and one in fp32 (``precision="fp32"``). The best
epoch (by uncalibrated validation score, a noisy pick) and the last, annealed epoch of each
run are calibrated on the training slices as the built-in model's export does, then
scored on slices 25-29 through the ``Predictor`` as users run it (``precision="auto"``).
Prints the figures of both and each recipe's precision; ``auto`` is bf16 only on a CPU with
bf16 hardware (AMX or AVX-512 BF16), so train both runs on such a machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from train_builtin_models import RECIPES, RUNS, final_model, isbi_train_val

from napari_unet.core.device import cpu_has_fast_bf16
from napari_unet.core.evaluate import calibrate_binary_decision, evaluate
from napari_unet.core.models.registry import load_model

RUNS_COMPARED = ("em-membranes-base", "em-membranes-base-fp32")
COLUMNS = ("iou_interior", "pixel_error", "rand_error", "vi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"this CPU has bf16 hardware: {cpu_has_fast_bf16()}")
    print(f"{'run':<24} {'precision':<10} {'epoch':<6}" + "".join(f"{c:>13}" for c in COLUMNS))
    training, validation = isbi_train_val()  # read once for the four models
    for name in RUNS_COMPARED:
        precision = RECIPES[name]["train"].get("precision", "auto")
        for epoch, model in (
            ("best", load_model(RUNS / name / "best")),
            ("last", final_model(name)),
        ):
            calibrate_binary_decision(model, *training)
            scores = evaluate(*validation, model)["overall"]
            print(
                f"{name:<24} {precision:<10} {epoch:<6}"
                + "".join(f"{scores[c]:>13.4f}" for c in COLUMNS),
                flush=True,
            )


if __name__ == "__main__":
    main()
