"""Provenance: which model, which napari-unet and which options made a result.

Written beside every output (nnU-Net saves its call the same way) so that a result can be
reproduced or questioned months later: in an OME-Zarr label image's attributes under
``"napari_unet"``, beside a TIFF as ``<file>.json``, and in a napari layer's metadata.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from napari_unet.core.io.files import atomic_write

KEY = "napari_unet"
"""Where provenance lives in metadata: zarr attributes, napari layer metadata."""


def provenance_record(
    model: Any, options: Any, source: str | None = None, axes: str | None = None
) -> dict[str, Any]:
    """Return the record of one prediction: versions, the model's card summary, the options.

    ``model`` is a loaded :class:`~napari_unet.core.models.model_types.Model`; ``options``
    anything with ``as_dict()`` (:class:`~napari_unet.core.predict.options.PredictOptions`).
    """
    import napari_unet

    description = model.description
    return {
        "napari_unet": napari_unet.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": source,
        "axes": axes,
        "model": {
            "name": description.name,
            "output_kind": description.output_kind,
            "spatial_dims": description.spatial_dims,
            "pixel_size_um": description.pixel_size_um,
            "class_names": list(description.class_names),
            "postprocess": dict(description.postprocess),  # the thresholds objects were cut by
            "provenance": description.provenance,
        },
        "options": options.as_dict(),
    }


def sidecar_path(output: str | Path) -> Path:
    """Where a file output's provenance goes: ``cells_labels.tif`` -> ``cells_labels.tif.json``."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def write_sidecar(output: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` beside ``output`` atomically (replacing an older run's record)."""
    target = sidecar_path(output)
    text = json.dumps(record, indent=2, default=str)
    atomic_write(target, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
    return target
