"""Tiny models and images shared by the engine tests: every test runs in well under a second."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fake_clock import FakeClock, install

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The training and validation data beside the checkout (ISBI 2012, DSB 2018), as CI lays it."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` for the scenario tests with the real models on real data.

    Missing data skips those tests on a developer's clone, but fails them in CI (``CI`` set),
    where a skip would hide that the scenarios never ran.
    """
    if not SHARED_DATA.is_dir():
        message = f"real-data scenarios need {SHARED_DATA} (see ../shared/data/README.md)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


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


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """``time.monotonic`` that moves only when the test advances it (see tests/fake_clock.py)."""
    return install(monkeypatch)
