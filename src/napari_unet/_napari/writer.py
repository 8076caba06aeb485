"""napari writer: a Labels layer to TIFF, keeping its scale as the file's pixel size.

A result of the Segment dock carries its provenance (model, version, options, source layer)
in ``metadata["napari_unet"]``; it is written beside the file as ``<file>.json``, as
``napari-unet predict`` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_unet._napari.placement import axes_from_labels
from napari_unet.core.io import write_labels as write_labels_file
from napari_unet.core.provenance import KEY, sidecar_path, write_sidecar

SPACE_AXES = "ZYX"


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer; napari's save dialog already asked before replacing a file.

    The layer's axis labels (``z``, ``y``, ``x`` as our reader sets them) name the axes, and
    its scale becomes the pixel size in micrometres, so reading the file back restores both.
    The layer's provenance goes beside the file; a layer without one removes a record an
    earlier file of that name left there, which would describe other labels.
    """
    labels = np.asarray(data[0] if meta.get("multiscale") else data)
    axes = axes_from_labels(meta.get("axis_labels", ()), labels.ndim)
    scale = [float(value) for value in meta.get("scale", [1.0] * labels.ndim)]
    units = meta.get("units") or ("pixel",) * labels.ndim
    pixel_size_um = layer_pixel_size_um(axes, scale, units)
    written = write_labels_file(path, labels, axes, pixel_size_um=pixel_size_um, overwrite=True)
    record = (meta.get("metadata") or {}).get(KEY)
    if record is not None:
        write_sidecar(written, record)
    else:
        sidecar_path(written).unlink(missing_ok=True)
    return [str(written)]


def layer_pixel_size_um(
    axes: str, scale: Sequence[float], units: Sequence[Any]
) -> dict[str, float] | None:
    """Read a layer's pixel size in micrometres from its scale and units.

    Axes in a length unit (nm, µm...) are converted. A layer with no length unit at all
    (napari's "pixel") claims no pixel size at scale 1 (1 there means "unknown", not 1 µm);
    at another scale it is taken as micrometres, as napari layers set before napari had units.
    """
    import pint

    registry = pint.get_application_registry()
    sizes = {}
    for axis, size, unit in zip(axes, scale, units, strict=True):
        try:
            quantity = registry.Quantity(size, str(unit)).to("micrometer")
        except (pint.DimensionalityError, pint.UndefinedUnitError):
            continue
        if axis in SPACE_AXES:
            sizes[axis] = float(quantity.magnitude)
    if sizes:
        return sizes
    legacy = {axis: float(size) for axis, size in zip(axes, scale, strict=True)}
    return legacy if any(s != 1.0 for s in scale) else None
