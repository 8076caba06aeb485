"""A flows model's objects in blocks against one pass: do they stitch across block seams?

    python benchmarks/bench_flows_blockwise.py --run unseen-flows

Predicts the DSB validation images of at least 512 x 512 pixels once whole and once in
blocks of 256 x 256 pixels (each post-processed with its halo, objects joined across seams)
and prints, per image, the AP@0.5 of the blocked objects against the whole-image objects
and of both against the true masks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from train_builtin_models import RUNS, dsb_split

from napari_unet.core.metrics import instance_scores
from napari_unet.core.models import load_model
from napari_unet.core.predict.predictor import Predictor

WHOLE = 8192
"""A block edge larger than any image: one block, no seams."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="unseen-flows")
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(RUNS / args.run / "best")
    whole = Predictor(model, block_shape=(1, WHOLE, WHOLE), precision="fp32")
    blocked = Predictor(model, block_shape=(1, args.block, args.block), precision="fp32")
    agreement, truth_whole, truth_blocked = [], [], []
    for image, mask, _ in zip(*dsb_split("val"), strict=True):
        if min(mask.shape) < 2 * args.block:
            continue
        one, many = whole.predict(image), blocked.predict(image)
        agreement.append(instance_scores(one, many)["ap50"])
        truth_whole.append(instance_scores(mask, one)["ap50"])
        truth_blocked.append(instance_scores(mask, many)["ap50"])
        print(
            f"{mask.shape}: blocks vs whole {agreement[-1]:.3f}; against the truth whole "
            f"{truth_whole[-1]:.3f}, blocks {truth_blocked[-1]:.3f}",
            flush=True,
        )
    print(
        f"{len(agreement)} images: blocks vs whole {np.mean(agreement):.3f}; against the truth "
        f"whole {np.mean(truth_whole):.3f}, blocks {np.mean(truth_blocked):.3f}"
    )


if __name__ == "__main__":
    main()
