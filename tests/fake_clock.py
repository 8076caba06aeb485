"""A clock the test moves by hand, so a time budget is checked exactly and cannot flake."""

from __future__ import annotations

import time

import pytest


class FakeClock:
    """Stands in for ``time.monotonic``: time passes only when the test says work took it."""

    def __init__(self) -> None:
        self.now = 1000.0  # any start: the engine only ever subtracts readings

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, as if the work the test stands in for had taken them."""
        self.now += seconds


def install(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace ``time.monotonic`` everywhere it is looked up at call time (``time.monotonic()``)."""
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock)
    return clock
