"""Tiny models and images shared by the engine tests: every test runs in well under a second."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def blobs(rng: np.random.Generator) -> np.ndarray:
    """A 70x90 uint16 image of bright discs with noise (sizes not multiples of the pooling)."""
    yy, xx = np.mgrid[:70, :90]
    image = np.full((70, 90), 100.0)
    for cy, cx in [(15, 20), (40, 60), (55, 25), (20, 75)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 80] = 900
    return (image + rng.normal(0, 30, image.shape)).clip(0).astype(np.uint16)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny networks train several times faster on one thread than on two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
