"""OME-Zarr images made by ome-zarr itself, as other tools write them, for the I/O tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import format_from_version
from ome_zarr.writer import write_image

SPACE = {"type": "space", "unit": "micrometer"}


def ngff_image(
    path: Path,
    data: np.ndarray,
    version: str = "0.5",
    pixel_size: tuple[float, float] = (0.5, 0.25),
) -> Path:
    """A two-level CYX OME-Zarr image written by ome-zarr itself (as other tools write them)."""
    fmt = format_from_version(version)
    group = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
    write_image(
        data,
        group,
        fmt=fmt,
        scale_factors=(2,),
        axes=[{"name": "c", "type": "channel"}, {"name": "y", **SPACE}, {"name": "x", **SPACE}],
        scale={"c": 1.0, "y": pixel_size[0], "x": pixel_size[1]},
        axes_units={"y": "micrometer", "x": "micrometer"},
    )
    return path
