"""Training targets: per-pixel class maps (with an "ignore" value) from user masks.

Masks come in two kinds. *Semantic* masks hold a class index per pixel. *Instance* masks hold
one label per object; the network cannot output arbitrary object ids, so they become three
classes (background, interior, boundary) and post-processing rebuilds objects from them.

Sparse annotation: a mask value of 0 means "not annotated" and maps to :data:`IGNORE_INDEX`,
which the loss skips, so a few painted objects are enough to train on. The rules are

* semantic, sparse: value ``k >= 1`` is class ``k - 1``;
* instances, sparse: value ``1`` is painted background (:data:`SPARSE_BACKGROUND`), values
  ``>= 2`` are objects (each painted object must be complete: its outline is its boundary).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage as ndi

from napari_unet.names import Target

IGNORE_INDEX = -1
"""Target value of pixels the loss ignores (not annotated, or padding)."""

SPARSE_BACKGROUND = 1
"""In sparse instance masks, the value users paint background with."""


def semantic_target(mask: np.ndarray, sparse: bool = False) -> np.ndarray:
    """Class index per pixel (``int16``); if ``sparse``, 0 is ignored and ``k`` is class k-1."""
    target = mask.astype(np.int16)
    if sparse:
        target -= 1  # 0 (not annotated) becomes -1 == IGNORE_INDEX
    return target


def instance_target(mask: np.ndarray, sparse: bool = False, boundary_width: int = 1) -> np.ndarray:
    """Background (0), interior (1) and boundary (2) classes from an instance mask.

    The boundary is the outermost ``boundary_width`` pixels of each object, i.e. object pixels
    next to a pixel with another value (background, unannotated or another object), so two
    touching objects are separated by their two boundary rims.
    """
    labels = mask.astype(np.int64, copy=False)
    objects = labels >= 2 if sparse else labels > 0
    edge = _label_edges(np.where(objects, labels, 0), boundary_width) & objects
    target = np.zeros(mask.shape, dtype=np.int16)
    target[objects] = 1
    target[edge] = 2
    if sparse:
        target[labels == 0] = IGNORE_INDEX
    return target


def center_distance(mask: np.ndarray, sparse: bool = False) -> np.ndarray:
    """Distance to each object's outline, divided by the object's largest distance (float32).

    1 on an object's centre, falling to ``1 / max`` on its outermost pixels, 0 outside objects.
    Touching objects meet at a valley, so seeds taken where it is high split them, whatever the
    objects' sizes (the normalisation makes every object's core reach 1). This is the regression
    target of *distance* instance models, next to the three boundary classes.
    """
    distance = np.zeros(mask.shape, dtype=np.float32)
    for index, box, objects in _each_object(mask, sparse):
        grown = tuple(
            slice(max(0, s.start - 1), min(n, s.stop + 1))
            for s, n in zip(box, objects.shape, strict=True)
        )
        inside = objects[grown] == index
        local = ndi.distance_transform_edt(inside).astype(np.float32)
        distance[grown][inside] = local[inside] / local.max()
    return distance


def center_potential(mask: np.ndarray, sparse: bool = False) -> np.ndarray:
    """Return a potential rising by one per pixel towards each object's centre (0 outside).

    The centre is the object's innermost pixel (farthest from its outline), so it lies inside
    even a bent object. *Flows* models learn the normalised gradient of this potential: unit
    vectors that point from every pixel of an object straight to its centre, which
    post-processing follows to group pixels (:mod:`napari_unet.core.predict.flows`). The
    potential, not the vectors, is the stored target, because it is a scalar: flips, rotations
    and deformations move it like an image, and its gradient is taken after them.
    Every object's value is at least 1 on its own pixels, about 1 on its outline.
    """
    potential = np.zeros(mask.shape, dtype=np.float32)
    for index, box, objects in _each_object(mask, sparse):
        inside = objects[box] == index
        depth = ndi.distance_transform_edt(np.pad(inside, 1))[(slice(1, -1),) * inside.ndim]
        centre = np.unravel_index(int(np.argmax(depth)), inside.shape)
        grids = np.indices(inside.shape, dtype=np.float32)
        offsets = [grid - c for grid, c in zip(grids, centre, strict=True)]
        from_centre = np.sqrt(sum(offset**2 for offset in offsets))
        local = from_centre[inside].max() + 1 - from_centre
        potential[box][inside] = local[inside]
    return potential


def _each_object(
    mask: np.ndarray, sparse: bool
) -> Iterator[tuple[int, tuple[slice, ...], np.ndarray]]:
    """Yield each object's label, bounding box and the object labels (sparse: labels >= 2)."""
    labels = mask.astype(np.int64, copy=False)
    objects = np.where(labels >= 2, labels, 0) if sparse else labels
    for index, box in enumerate(ndi.find_objects(objects), start=1):
        if box is not None:
            yield index, box, objects


def _label_edges(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` steps (full connectivity) of a pixel with a different label."""
    footprint = ndi.generate_binary_structure(labels.ndim, labels.ndim)
    edge = np.zeros(labels.shape, dtype=bool)
    high = ndi.grey_dilation(labels, footprint=footprint)
    low = ndi.grey_erosion(labels, footprint=footprint)
    edge |= (high != labels) | (low != labels)
    if width > 1:
        edge = ndi.binary_dilation(edge, footprint, iterations=width - 1) & (labels > 0)
    return edge


def object_labels(mask: np.ndarray, target: Target, sparse: bool = False) -> np.ndarray:
    """One label per object, as the weight map's distance terms need.

    For instance masks these are the objects themselves; for semantic masks the connected
    components of every class but the first (e.g. the cells between membranes).
    """
    if target == "instances":
        labels = mask.astype(np.int32)
        if sparse:
            labels[labels < 2] = 0
        return labels
    classes = semantic_target(mask, sparse)
    components, _ = ndi.label(classes >= 1)
    return components


def weight_map(
    target: np.ndarray,
    objects: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    n_classes: int | None = None,
) -> np.ndarray:
    """Compute the paper's loss weights ``w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``.

    ``w_c`` balances class frequencies (mean weight 1 over annotated pixels); ``d1`` and
    ``d2`` are the distances to the nearest and second-nearest object of ``objects``. The
    border term is added only to pixels outside every object, i.e. the thin gaps between
    touching objects that the network must learn to keep open. Ignored pixels get weight 0.

    Parameters
    ----------
    target
        Class index per pixel, :data:`IGNORE_INDEX` where not annotated.
    objects
        One label per object (0 elsewhere); for instance targets pass the interiors.
    """
    annotated = target != IGNORE_INDEX
    classes = target[annotated].astype(np.int64)
    n_classes = n_classes or int(classes.max(initial=0)) + 1
    counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
    present = counts > 0
    class_weight = np.zeros(n_classes)
    class_weight[present] = classes.size / (present.sum() * counts[present])
    weights = np.zeros(target.shape, dtype=np.float32)
    weights[annotated] = class_weight[classes]
    d1, d2 = _two_nearest_object_distances(objects, margin=int(np.ceil(4 * sigma)))
    gaps = annotated & (objects == 0) & np.isfinite(d2)
    weights[gaps] += w0 * np.exp(-((d1[gaps] + d2[gaps]) ** 2) / (2 * sigma**2))
    return weights


def _two_nearest_object_distances(
    objects: np.ndarray, margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance to the nearest and second-nearest object (``inf`` beyond ``margin``).

    Each object's distance transform is computed only in its bounding box grown by
    ``margin``: farther away the border term is below 1e-5 of ``w0`` anyway.
    """
    d1 = np.full(objects.shape, np.inf, dtype=np.float32)
    d2 = np.full(objects.shape, np.inf, dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(objects), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(0, s.start - margin), min(n, s.stop + margin))
            for s, n in zip(box, objects.shape, strict=True)
        )
        distance = ndi.distance_transform_edt(objects[grown] != index).astype(np.float32)
        near1, near2 = d1[grown], d2[grown]
        d2[grown] = np.where(distance < near1, near1, np.minimum(near2, distance))
        d1[grown] = np.minimum(near1, distance)
    return d1, d2
