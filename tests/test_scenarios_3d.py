"""Stacks joined in 3D with the real built-in models on crops of the real data (../shared/data).

The failure these guard against: a 2D model's objects joined by 3D connectivity fused every
cell of an EM stack into one object (36 objects, the largest holding 99.8% of the foreground),
and toy models never showed it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.metrics import adapted_rand_error

from napari_unet.core.predict.predictor import Predictor

NUCLEI_STACK_SOURCE = "a90cad45551d62c5cfa89517df8eb5e8f2f87f1a6e6678e606907afcbad91731"
"""A DSB 2018 validation image (fluorescence, 140 nuclei) made into a stack below."""


def per_slice_counts(labels: np.ndarray) -> np.ndarray:
    return np.array([np.unique(plane[plane > 0]).size for plane in labels])


def largest_share(labels: np.ndarray) -> float:
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max() / sizes.sum())


@pytest.fixture(scope="module")
def em_stack(shared_data) -> np.ndarray:
    """Eight consecutive ISBI 2012 training slices, 384 x 384 pixels."""
    return tifffile.imread(shared_data / "isbi2012" / "train-volume.tif")[:8, :384, :384]


@pytest.fixture(scope="module")
def em_predictor() -> Predictor:
    return Predictor("em-membranes")


@pytest.fixture(scope="module")
def em_planes(em_predictor, em_stack) -> np.ndarray:
    """Each slice segmented on its own (T instead of Z): the 2D reference."""
    return em_predictor.predict(em_stack, axes="TYX", output="instances")


@pytest.fixture(scope="module")
def em_joined(em_predictor, em_stack) -> np.ndarray:
    """The stack's objects joined in 3D, in one block."""
    return em_predictor.predict(em_stack, axes="ZYX", output="instances")


def test_em_stack_joined_in_3d_keeps_each_slices_cells(em_joined, em_planes):
    joined = em_joined
    flat = per_slice_counts(em_planes)
    assert flat.min() > 60  # a real EM slice of this size holds many cells
    np.testing.assert_array_equal(per_slice_counts(joined), flat)
    # was 0.998 with 3D connectivity; a cell large in every slice keeps its 2D share
    assert largest_share(joined) <= max(largest_share(plane) for plane in em_planes) < 0.2
    # cells continue through slices: far fewer 3D objects than 2D ones, but no fusion
    assert flat.max() < joined.max() < 0.6 * flat.sum()


@pytest.mark.parametrize("block_shape", [(3, 384, 384), (8, 192, 192)])
def test_em_stack_blocks_join_as_one_pass(em_stack, em_joined, block_shape):
    whole = em_joined
    blocked = Predictor("em-membranes", block_shape=block_shape).predict(
        em_stack, axes="ZYX", output="instances"
    )
    error, _, _ = adapted_rand_error(whole, blocked)
    assert error < 0.01
    if block_shape[1:] == em_stack.shape[1:]:  # split in Z only: exactly the same objects
        assert error == 0 and whole.max() == blocked.max()


def test_nuclei_stack_joins_each_nucleus_through_its_slices(shared_data):
    image = tifffile.imread(
        shared_data / "dsb2018" / "val" / "images" / f"{NUCLEI_STACK_SOURCE}.tif"
    )
    crop = image[:256, :320].astype(np.float32)
    rng = np.random.default_rng(0)
    # Five optical sections: the nuclei drift one pixel a slice and dim away from the middle.
    stack = np.stack(
        [
            np.roll(crop, z, axis=1) * (1 - 0.15 * abs(z - 2)) + rng.normal(0, 2, crop.shape)
            for z in range(5)
        ]
    ).clip(0, 255)
    predictor = Predictor("nuclei")
    planes = predictor.predict(stack, axes="TYX", output="instances")
    joined = predictor.predict(stack, axes="ZYX", output="instances")
    flat = per_slice_counts(planes)
    assert flat.min() > 30
    np.testing.assert_array_equal(per_slice_counts(joined), flat)
    # each nucleus is one object through the stack: about one slice's count, not five
    assert joined.max() <= 1.15 * np.median(flat)
    assert largest_share(joined) < 3 * max(largest_share(plane) for plane in planes)
