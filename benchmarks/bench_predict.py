"""Prediction throughput and peak memory: napari-unet vs MONAI vs one bare forward pass.

    python benchmarks/bench_predict.py [--model nuclei] [--repeats 2]

For a 2048x2048 image and a 32x512x512 stack (2D model slice by slice), one network:
  (a) napari_unet.Predictor with its defaults (memory-sized tiles, receptive-field overlap,
      channels-last, bf16 autocast where the CPU has bf16 hardware), normalisation included;
  (a') the same in fp32, for reference;
  (b) MONAI sliding_window_inference on the same network: roi 512, overlap 0.25, Gaussian;
  (c) the bare network forward on the whole image in one pass (per slice for the stack),
      fp32: the ceiling.
Each method runs in its own process, so peak memory (max RSS) is its own. Labels are the
per-pixel class (argmax); agreement is measured against (c).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

SAMPLE = Path(__file__).resolve().parent.parent / "src" / "napari_unet" / "samples" / "nuclei.tif"
CASES = {"image 2048x2048": (2048, 2048), "stack 32x512x512": (32, 512, 512)}
METHODS = {
    "a": "napari-unet defaults",
    "a32": "napari-unet fp32",
    "b": "MONAI sliding window",
    "c": "bare forward (ceiling)",
}


def make_image(shape: tuple[int, ...]) -> np.ndarray:
    """Real nuclei texture at the requested size: the bundled sample, mirrored and tiled."""
    tile = tifffile.imread(SAMPLE)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    plane = np.tile(tile, (4, 3))
    if len(shape) == 2:
        return np.ascontiguousarray(plane[: shape[0], : shape[1]])
    return np.stack(
        [plane[17 * z : 17 * z + shape[1], 23 * z : 23 * z + shape[2]] for z in range(shape[0])]
    )


def run_one(method: str, case: str, model_name: str, labels_path: str) -> dict[str, float]:
    from napari_unet.core.axes import CanonicalView
    from napari_unet.core.models.registry import load_model
    from napari_unet.core.normalize import fit_normalizer
    from napari_unet.core.predict.predictor import Predictor

    model = load_model(model_name)
    image = make_image(CASES[case])
    axes = "YX" if image.ndim == 2 else "ZYX"
    network = model.network.eval()
    if method in ("a", "a32"):
        predictor = Predictor(model, precision="auto" if method == "a" else "fp32")
        predictor.predict(image[..., :256, :256], axes=axes, output="semantic")  # warm-up
        start = time.perf_counter()
        labels = predictor.predict(image, axes=axes, output="semantic")
        seconds = time.perf_counter() - start
    else:
        normalizer = fit_normalizer(
            CanonicalView(image, axes), model.description.normalization, slice(None)
        )
        x = torch.from_numpy(normalizer(image.reshape(-1, 1, *image.shape[-2:])))
        with torch.inference_mode():
            network(x[:1, :, :256, :256])  # warm-up
            start = time.perf_counter()
            if method == "b":
                from monai.inferers import sliding_window_inference

                logits = sliding_window_inference(
                    x,
                    roi_size=(512, 512),
                    sw_batch_size=4,
                    predictor=network,
                    overlap=0.25,
                    mode="gaussian",
                )
            else:
                logits = torch.cat([network(x[i : i + 1]) for i in range(x.shape[0])])
            labels = logits.argmax(dim=1).to(torch.uint8).numpy()
            seconds = time.perf_counter() - start
        labels = labels.reshape(image.shape)
    np.save(labels_path, labels)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "megapixels_per_s": image.size / seconds / 1e6, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per method")
    parser.add_argument(
        "--one", nargs=3, metavar=("METHOD", "CASE", "LABELS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.model, args.one[2])))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model!r}")
    with tempfile.TemporaryDirectory() as scratch:
        for case in CASES:
            results: dict[str, dict[str, float]] = {}
            for method in METHODS:
                path = str(Path(scratch) / f"{method}.npy")
                runs = []
                for _ in range(args.repeats):
                    output = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--model",
                            args.model,
                            "--one",
                            method,
                            case,
                            path,
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    runs.append(json.loads(output.strip().splitlines()[-1]))
                results[method] = max(runs, key=lambda r: r["megapixels_per_s"])
                results[method]["peak_mb"] = max(r["peak_mb"] for r in runs)
            ceiling = np.load(Path(scratch) / "c.npy")
            print(f"\n{case}")
            print(f"{'method':<26}{'MP/s':>8}{'seconds':>9}{'peak MB':>9}{'labels = (c)':>14}")
            for method, name in METHODS.items():
                agree = float((np.load(Path(scratch) / f"{method}.npy") == ceiling).mean())
                r = results[method]
                print(
                    f"{name:<26}{r['megapixels_per_s']:>8.2f}{r['seconds']:>9.2f}{r['peak_mb']:>9.0f}{agree:>13.2%}"
                )
            a, b, c = (results[m]["megapixels_per_s"] for m in ("a", "b", "c"))
            print(f"(a)/(b) = {a / b:.2f}x (target >= 1.3)   (a)/(c) = {a / c:.0%} (target >= 80%)")


if __name__ == "__main__":
    main()
