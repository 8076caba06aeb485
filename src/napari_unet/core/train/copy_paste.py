"""Copy-paste of labelled objects (Ghiasi et al. 2021): denser, more varied training patches.

Crowded images are where instance models split and merge wrongly, and a training set has
few of them. Pasting whole objects, with their targets, from other patches of the batch onto
the background of a patch makes crowded patches from sparse ones, and puts objects of one
image on the background of another. An object lands only where the patch is annotated
background (with a margin), so no existing object or unannotated pixel is covered.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.train.augment import Sample

INTERIOR, BOUNDARY = 1, 2
"""Instance classes of :func:`~napari_unet.core.train.targets.instance_target`."""
MARGIN_PX = 2
"""Annotated background kept around a pasted object, so it touches nothing."""
TRIES_PER_OBJECT = 8
"""Random places tried for an object before it is left out."""


def object_footprints(target: np.ndarray) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """Whole objects of an instance target: each one's box and its pixels in the box.

    An object is a connected interior with the boundary rim around it; objects cut by the
    patch edge and objects without interior are skipped.
    """
    full = ndi.generate_binary_structure(target.ndim, target.ndim)
    interiors, _ = ndi.label(target == INTERIOR)
    objects = []
    for index, box in enumerate(ndi.find_objects(interiors), start=1):
        if box is None:
            continue
        grown = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        if any(s.start < 0 or s.stop > n for s, n in zip(grown, target.shape, strict=True)):
            continue
        inside = interiors[grown] == index
        rim = ndi.binary_dilation(inside, full) & (target[grown] == BOUNDARY)
        objects.append((grown, inside | rim))
    return objects


def paste_objects(
    receiver: Sample, donors: list[Sample], rng: np.random.Generator, count: int
) -> Sample:
    """Paste up to ``count`` random whole objects of ``donors`` onto ``receiver``'s background.

    Image, target, weights and distance are copied over each object's pixels, so every pasted
    object comes with the targets it had. Objects that find no free background are skipped.
    """
    pool = [
        (donor, box, shape) for donor in donors for box, shape in object_footprints(donor.target)
    ]
    if not pool or count <= 0:
        return receiver
    arrays = [None if array is None else array.copy() for array in receiver]
    free = receiver.target == 0
    for choice in rng.permutation(len(pool))[:count]:
        donor, box, shape = pool[choice]
        corner = _free_place(free, shape, rng)
        if corner is None:
            continue
        place = tuple(slice(c, c + n) for c, n in zip(corner, shape.shape, strict=True))
        for array, source in zip(arrays, donor, strict=True):
            if array is not None and source is not None:
                region = array[(..., *place)]
                region[..., shape] = source[(..., *box)][..., shape]
        free[place] &= ~shape
    return Sample(*arrays)


def _free_place(
    free: np.ndarray, shape: np.ndarray, rng: np.random.Generator
) -> tuple[int, ...] | None:
    """Return a random corner where ``shape`` and its margin cover only free background, or None."""
    room = [n - m + 1 for n, m in zip(free.shape, shape.shape, strict=True)]
    if min(room) < 1:
        return None
    needed = ndi.binary_dilation(np.pad(shape, MARGIN_PX), iterations=MARGIN_PX)
    for _ in range(TRIES_PER_OBJECT):
        corner = tuple(int(rng.integers(n)) for n in room)
        window = tuple(
            slice(c - MARGIN_PX, c + n + MARGIN_PX)
            for c, n in zip(corner, shape.shape, strict=True)
        )
        if _all_free(free, window, needed):
            return corner
    return None


def _all_free(free: np.ndarray, window: tuple[slice, ...], needed: np.ndarray) -> bool:
    """Whether every needed pixel of ``window`` (clipped at the patch edge) is free."""
    inside = tuple(
        slice(max(0, s.start), min(n, s.stop)) for s, n in zip(window, free.shape, strict=True)
    )
    offset = tuple(i.start - s.start for i, s in zip(inside, window, strict=True))
    cut = tuple(slice(o, o + i.stop - i.start) for o, i in zip(offset, inside, strict=True))
    return bool(free[inside][needed[cut]].all())
