"""Progress reporting and cancellation, passed into the engine by whoever calls it."""

from __future__ import annotations

import threading
from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` with counts of work units (tiles, steps)."""


class Cancelled(RuntimeError):
    """Raised inside the engine when the caller's :class:`CancelToken` was cancelled."""


class CancelToken:
    """A thread-safe flag the engine checks between units of work (tile batches, steps)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def check_cancelled(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set; no-op for ``None``."""
    if cancel is not None:
        cancel.raise_if_cancelled()


class WorkCounter:
    """Counts done work units, reports them, and checks for cancellation after each step.

    One counter for every loop that reports ``progress(done, total)``: tiles of blockwise
    prediction, blocks finished on a cluster.
    """

    def __init__(
        self, total: int, progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> None:
        self.done, self.total, self.progress, self.cancel = 0, total, progress, cancel
        if progress is not None:
            progress(0, total)

    def add(self, units: int) -> None:
        """Count ``units`` more as done (never past the total), report, then check cancel."""
        self.done = min(self.total, self.done + units)
        if self.progress is not None:
            self.progress(self.done, self.total)
        check_cancelled(self.cancel)
