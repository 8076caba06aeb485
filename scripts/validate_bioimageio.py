"""Export the built-in models as bioimage.io packages and check them with the reference tools.

For each built-in model: export it (test tensors cropped from its bundled sample image, or
with ``--no-sample`` from the synthetic default, as ``napari-unet export nuclei nuclei.zip``
does), then validate the package with bioimageio.spec and run bioimageio.core's model test
(every weight format reproduces the test outputs, at several input sizes), then import it
back and check that napari-unet's predictions on the sample are unchanged. Offline; about a
minute on 2 cores.

    python scripts/validate_bioimageio.py [--out FOLDER] [--models nuclei em-membranes]
        [--no-sample]

Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SAMPLES = {"nuclei": "nuclei.tif", "em-membranes": "em.tif"}


def check(name: str, out: Path, with_sample: bool = True) -> bool:
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    from napari_unet.core.bioimageio.export import export_bioimageio
    from napari_unet.core.io.images import read_image
    from napari_unet.core.models.registry import BUILTIN_DIR, load_model
    from napari_unet.core.predict.predictor import Predictor

    sample = read_image(BUILTIN_DIR.parent / "samples" / SAMPLES[name]).data
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nuclei's dark_background note
        package = export_bioimageio(
            name, out / f"{name}.zip", sample=sample if with_sample else None, overwrite=True
        )
    exported = time.perf_counter() - start
    format_status = load_description(package).validation_summary.status
    start = time.perf_counter()
    summary = test_model(package)
    tested = time.perf_counter() - start
    failed = [d for d in summary.details if d.status != "passed"]
    for detail in failed:
        print(f"  FAILED {detail.name}: {[e.msg for e in detail.errors]}", file=sys.stderr)
    runs = sum("inference" in d.name or "Reproduce" in d.name for d in summary.details)
    predictions = [
        Predictor(model, device="cpu", precision="fp32").predict(sample)
        for model in (load_model(name), load_model(package))
    ]
    same = bool(np.array_equal(*predictions))
    size_mb = package.stat().st_size / 1e6
    print(
        f"{name}: {package} ({size_mb:.1f} MB, exported in {exported:.1f} s); spec: "
        f"{format_status}; bioimageio.core test: {summary.status} ({runs} runs, {tested:.0f} s); "
        f"re-imported predictions identical: {same}"
    )
    return format_status == "valid-format" and summary.status == "passed" and same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the packages (default: temporary)")
    parser.add_argument("--models", nargs="+", default=list(SAMPLES), choices=list(SAMPLES))
    parser.add_argument(
        "--no-sample", action="store_true", help="test tensors from the synthetic default image"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        results = [check(name, out, not args.no_sample) for name in args.models]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
