"""napari writer: a Labels layer to TIFF, keeping its scale as the file's pixel size."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet._napari.layer_data import axes_from_labels
from napari_unet.core.io import write_labels as write_labels_file


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer; napari's save dialog already asked before replacing a file.

    The layer's axis labels (``z``, ``y``, ``x`` as our reader sets them) name the axes, and
    its scale becomes the pixel size in micrometres, so reading the file back restores both.
    A layer at scale 1 everywhere gets no pixel size: 1 there means "unknown", not 1 µm.
    """
    labels = np.asarray(data[0] if meta.get("multiscale") else data)
    axes = axes_from_labels(meta.get("axis_labels", ()), labels.ndim)
    scale = [float(value) for value in meta.get("scale", [1.0] * labels.ndim)]
    pixel_size_um = dict(zip(axes, scale, strict=True)) if any(s != 1.0 for s in scale) else None
    written = write_labels_file(path, labels, axes, pixel_size_um=pixel_size_um, overwrite=True)
    return [str(written)]
