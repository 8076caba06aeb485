"""A clock the test moves by hand, so a time budget is checked exactly and cannot flake."""

from __future__ import annotations

import functools
import time
from typing import Any

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

    def charge(
        self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, seconds: float
    ) -> None:
        """Make every call of ``owner.name`` (a step's loss, a validation pass) take ``seconds``."""
        work = getattr(owner, name)

        @functools.wraps(work)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.advance(seconds)
            return work(*args, **kwargs)

        monkeypatch.setattr(owner, name, timed)


def install(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace ``time.monotonic`` everywhere it is looked up at call time (``time.monotonic()``)."""
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock)
    return clock
