from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import tifffile

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scripted_session.py"


def test_example_opens_segments_and_saves(tiny_model, blobs, tmp_path) -> None:
    tifffile.imwrite(tmp_path / "blobs.tif", blobs)
    main = runpy.run_path(str(EXAMPLE))["main"]
    written = main(
        [
            str(tmp_path / "blobs.tif"),
            "--model",
            tiny_model,
            "--out",
            str(tmp_path / "labels.tif"),
            "--no-show",
        ]
    )
    assert tifffile.imread(written).shape == blobs.shape
    assert np.issubdtype(tifffile.imread(written).dtype, np.integer)
