"""Crops and picks of ../shared/data for the scenario tests with the real built-in models."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile


def dsb_images(root: Path, modality: str, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` validation images of a modality with 20 to 80 nuclei, and masks."""
    with open(root / "dsb2018" / "index.csv", newline="") as table:
        rows = [
            row
            for row in csv.DictReader(table)
            if row["split"] == "val"
            and row["modality"] == modality
            and 20 <= int(row["n_nuclei"]) <= 80
            and int(row["height"]) <= 360
        ]
    folder = root / "dsb2018" / "val"
    return [
        (
            tifffile.imread(folder / "images" / f"{row['id']}.tif"),
            tifffile.imread(folder / "masks" / f"{row['id']}.tif"),
        )
        for row in rows[:count]
    ]
