"""Big data: peak memory and throughput as the input grows, here and on a 2-worker cluster.

    python benchmarks/bench_bigdata.py [--memory 2GB] [--workers 2] [--skip-cluster]

Inputs are zarr arrays on disk (the nuclei sample tiled and shifted, so objects cross every
block seam) and outputs zarr arrays written block by block (``out=``), nuclei model, object
labels (3D-joined for stacks). Each run is its own process, so its peak RSS is its own; on the
cluster the figure is the largest worker's (the client holds no image data). Printed:

  (1) peak RSS and MP/s for 2048x2048, 8192x8192, 16 and 64 slices of 1024x1024, blockwise in
      one process and on a LocalCluster, with the ratios the issue sets (8192 vs 2048 and 64 vs
      16 slices, at most 1.25x);
  (2) the whole-slice path (one block per image: the pre-blockwise algorithm) against the
      blockwise one at 8192x8192, side by side: time, and instances matched one-to-one at
      IoU >= 0.9; and, on 2048x2048, class labels of blocks of 512 against one block.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parent.parent / "src" / "napari_unet" / "samples" / "nuclei.tif"
CASES = {
    "2048x2048": (2048, 2048),
    "8192x8192": (8192, 8192),
    "16x1024x1024": (16, 1024, 1024),
    "64x1024x1024": (64, 1024, 1024),
}
CHUNK = 1024


def make_input(folder: Path, shape: tuple[int, ...]) -> Path:
    """A uint8 zarr of ``shape``: the sample tiled, each chunk rolled so seams cut objects."""
    import tifffile
    import zarr

    path = folder / ("in_" + "x".join(map(str, shape)) + ".zarr")
    if path.exists():
        return path
    sample = tifffile.imread(SAMPLE)
    tile = np.tile(sample, (CHUNK // sample.shape[0] + 2, CHUNK // sample.shape[1] + 2))
    chunks = (1, CHUNK, CHUNK)[-len(shape) :]
    array = zarr.create_array(store=path, shape=shape, chunks=chunks, dtype=sample.dtype)
    for index in np.ndindex(*(-(-n // c) for n, c in zip(shape, chunks, strict=True))):
        region = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, shape, strict=True)
        )
        shift = (97 * sum(index) + 31 * index[-1]) % sample.shape[0]
        block = np.roll(tile, shift, axis=0)[: region[-2].stop - region[-2].start]
        block = block[:, : region[-1].stop - region[-1].start]
        array[region] = block if len(shape) == 2 else block[np.newaxis]
    return path


def peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(spec: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import zarr

    from napari_unet.core.predict.predictor import Predictor

    source = zarr.open_array(spec["input"], mode="r")
    axes = "YX" if source.ndim == 2 else "ZYX"
    out = zarr.create_array(
        store=spec["output"],
        shape=source.shape,
        chunks=(1, 512, 512)[-source.ndim :],
        dtype=np.uint32,
        overwrite=True,
    )
    options = {"memory_limit": spec["memory"]}
    if spec["mode"] == "whole":
        options["block_shape"] = tuple(source.shape) if source.ndim == 3 else (1, *source.shape)
    client = None
    if spec["mode"] == "cluster":
        from napari_unet.core.predict.distributed import connect

        client = connect(workers=spec["workers"])
    predictor = Predictor("nuclei", **options)
    start = time.perf_counter()
    predictor.predict(source, axes=axes, output=spec["output_kind"], out=out, client=client)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    if client is not None:
        peaks = client.run(peak_rss_mb)
        peak = max(peaks.values())
        cluster = client.cluster
        client.close()
        cluster.close()
    return {"seconds": seconds, "peak_mb": peak, "objects": int(np.asarray(out[...]).max())}


def measure(spec: dict) -> dict:
    """Run ``spec`` in a child process and return its figures."""
    here = str(Path(__file__).parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import bench_bigdata as b; "
        "print('RESULT', json.dumps(b.run_case(json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{spec['mode']} {spec['input']} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def matched_share(expected: np.ndarray, found: np.ndarray) -> float:
    """Share of ``expected``'s objects matched one-to-one by ``found`` at IoU >= 0.9."""
    both = (expected > 0) & (found > 0)
    pairs = np.stack([expected[both], found[both]]).astype(np.int64)
    key = pairs[0] * (int(found.max()) + 1) + pairs[1]
    combos, shared = np.unique(key, return_counts=True)
    a, b = combos // (int(found.max()) + 1), combos % (int(found.max()) + 1)
    size_e = np.bincount(expected.ravel())
    size_f = np.bincount(found.ravel())
    iou = shared / (size_e[a] + size_f[b] - shared)
    good = iou >= 0.9
    if len(set(a[good])) != good.sum() or len(set(b[good])) != good.sum():
        return float("nan")
    return float(good.sum() / max(1, int(expected.max())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", default=None, help="memory limit for every run (default)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--folder", default=None, help="keep inputs here between runs")
    args = parser.parse_args()
    import zarr

    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench-bigdata-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows, figures = [], {}
    modes = ["local"] + ([] if args.skip_cluster else ["cluster"])
    for name in args.cases.split(","):
        shape = CASES[name]
        source = make_input(folder, shape)
        for mode in modes + (["whole"] if name == "8192x8192" else []):
            spec = {
                "input": str(source),
                "output": str(folder / f"out_{name}_{mode}.zarr"),
                "mode": mode,
                "memory": args.memory,
                "workers": args.workers,
                "output_kind": "instances",
            }
            result = measure(spec)
            figures[(name, mode)] = result
            megapixels = np.prod(shape) / 1e6
            rows.append(
                f"| {name} | {mode} | {result['peak_mb']:,.0f} | "
                f"{megapixels / result['seconds']:.2f} | {result['seconds']:.0f} | "
                f"{result['objects']:,} |"
            )
            print(rows[-1], flush=True)
    print("\n| input | run | peak RSS MB | MP/s | seconds | objects |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    for big, small in (("8192x8192", "2048x2048"), ("64x1024x1024", "16x1024x1024")):
        for mode in modes:
            if (big, mode) in figures and (small, mode) in figures:
                ratio = figures[(big, mode)]["peak_mb"] / figures[(small, mode)]["peak_mb"]
                print(f"peak RSS {big} / {small} ({mode}): {ratio:.2f}x (target <= 1.25x)")
    if ("8192x8192", "whole") in figures:
        whole = zarr.open_array(folder / "out_8192x8192_whole.zarr")[:]
        blocked = zarr.open_array(folder / "out_8192x8192_local.zarr")[:]
        speed = (
            figures[("8192x8192", "whole")]["seconds"] / figures[("8192x8192", "local")]["seconds"]
        )
        print(f"8192x8192 blockwise throughput / whole-slice path: {speed:.2f}x (target >= 1)")
        print(
            "8192x8192 instances matched one-to-one at IoU >= 0.9, blockwise vs whole-slice: "
            f"{matched_share(whole, blocked):.4f} (target >= 0.995)"
        )
        if ("8192x8192", "cluster") in figures:
            on_cluster = zarr.open_array(folder / "out_8192x8192_cluster.zarr")[:]
            print(
                "8192x8192 instances matched, cluster vs single process: "
                f"{matched_share(blocked, on_cluster):.4f}"
            )
    compare_classes(folder)


def compare_classes(folder: Path) -> None:
    """Class labels of 2048x2048 in blocks of 512 against one block, pixel for pixel."""
    import zarr

    from napari_unet.core.predict.predictor import Predictor

    image = zarr.open_array(make_input(folder, (2048, 2048)))[:]
    whole = Predictor("nuclei", block_shape=4096).predict(image, output="semantic")
    blocked = Predictor("nuclei", block_shape=512).predict(image, output="semantic")
    print(
        "2048x2048 class labels, blocks of 512 vs one block: "
        f"{int((whole != blocked).sum())} of {whole.size:,} pixels differ"
    )


if __name__ == "__main__":
    main()
