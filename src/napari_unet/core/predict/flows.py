"""Objects from flows: follow each foreground pixel's predicted vectors to where they end.

*Flows* models (cellpose's representation) predict, next to the background, interior and
boundary classes, a unit vector per pixel that points to the centre of the pixel's object
(the gradient of :func:`~napari_unet.core.train.targets.center_potential`). Moving every
foreground pixel along the vectors for a fixed number of unit steps (Euler integration,
vectorised over all pixels at once) gathers each object's pixels around its centre; the
places where pixels end, grown by one pixel, form one connected sink per object, and every
pixel takes the label of the sink it reached. Touching objects separate because their
vectors point away from the contact, whatever the boundary probability says there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def follow_flows(flows: np.ndarray, foreground: np.ndarray, steps: int) -> np.ndarray:
    """Flat index of the pixel where each foreground pixel ends after ``steps`` unit steps.

    ``flows`` is ``(dims, *spatial)``, vectors of about unit length inside objects; each step
    reads the vector at the nearest pixel. Positions stay inside the image (a block's edge:
    pixels whose centre lies beyond it gather at the edge, which stitching then joins).
    """
    shape = foreground.shape
    positions = [axis.astype(np.float32) for axis in np.nonzero(foreground)]
    fields = [np.ascontiguousarray(field, dtype=np.float32).ravel() for field in flows]
    highest = [np.float32(n - 1) for n in shape]
    for _ in range(steps):
        index = _nearest_index(positions, shape)
        for position, field, top in zip(positions, fields, highest, strict=True):
            position += field[index]
            np.clip(position, 0, top, out=position)
    return _nearest_index(positions, shape)


def _nearest_index(positions: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Flat index of the pixel nearest to each position (positions lie inside ``shape``)."""
    index = np.zeros(positions[0].shape, dtype=np.int64)
    for position, size in zip(positions, shape, strict=True):
        index *= size
        index += (position + 0.5).astype(np.int64)
    return index


def group_by_sink(flows: np.ndarray, foreground: np.ndarray, steps: int) -> np.ndarray:
    """Label foreground pixels by the connected sink their flows lead to (0 elsewhere, int64).

    The pixels where some foreground pixel ends, grown by one pixel, are the sinks.
    """
    ends = follow_flows(flows, foreground, steps)
    reached = np.zeros(foreground.size, dtype=bool)
    reached[ends] = True
    footprint = ndi.generate_binary_structure(foreground.ndim, foreground.ndim)
    sinks, _ = ndi.label(ndi.binary_dilation(reached.reshape(foreground.shape), footprint))
    labels = np.zeros(foreground.shape, dtype=np.int64)
    labels[foreground] = sinks.ravel()[ends]
    return labels
