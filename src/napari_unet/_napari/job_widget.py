"""A dock widget that runs one engine call in a worker, one job per viewer, Run turning into Cancel.

The engine reports progress through a callback and stops at its next check once the
:class:`CancelToken` is set; this class only carries those two across threads, so the viewer
keeps answering while a U-Net runs or trains. A viewer runs one job at a time, whoever asks
(a dock, a menu command, a script driving a dock): a second request is refused with a message
naming the running job, whose Cancel stays live. Closing the viewer, or the dock, cancels the
job, and leaving Python during a job cancels it and waits for it, so the exit is clean.
"""

from __future__ import annotations

import atexit
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from magicgui.widgets import Container, Label, ProgressBar, PushButton, Widget
from napari.layers import Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QThreadPool, QTimer
from superqt.utils import ensure_main_thread

from napari_unet.core.progress import Cancelled, CancelToken

if TYPE_CHECKING:
    import napari

PLUGIN_NAME = "napari-unet-segment"
"""The npe2 plugin name (the distribution's name), as napari's menus show it."""

EXIT_WAIT_MS = 60_000
"""How long leaving Python waits for cancelled jobs to reach their next cancellation check."""

_JOBS: weakref.WeakKeyDictionary[Any, JobWidget] = weakref.WeakKeyDictionary()
"""The dock whose job runs in each viewer."""

_DOCKS: weakref.WeakKeyDictionary[Any, weakref.WeakSet[JobWidget]] = weakref.WeakKeyDictionary()
"""Every dock of each viewer, told when a job ends so none keeps saying "busy"."""

BUSY = "busy: "
"""How a dock refused for another dock's job starts its status line."""

_TOKENS: set[CancelToken] = set()
"""Tokens of all running jobs, cancelled when the interpreter exits."""


def running_job(viewer: napari.Viewer) -> JobWidget | None:
    """Return the dock whose job is running in ``viewer``, or ``None``."""
    return _JOBS.get(viewer)


def _cancel_all_and_wait() -> None:
    """At interpreter exit: stop every job and let its thread finish before Python tears down."""
    for token in list(_TOKENS):
        token.cancel()
    if _TOKENS:
        QThreadPool.globalInstance().waitForDone(EXIT_WAIT_MS)


atexit.register(_cancel_all_and_wait)


class Signal(Protocol):
    """A psygnal signal or a napari event emitter: anything with connect and disconnect."""

    def connect(self, slot: Callable[..., Any]) -> Any:
        """Call ``slot`` on every emission."""

    def disconnect(self, slot: Callable[..., Any]) -> Any:
        """Stop calling ``slot``."""


class JobWidget(Container):
    """Fields, then a Run/Cancel button, a progress bar and a status line.

    Subclasses add their fields with :meth:`add_fields` and implement :meth:`start`, which
    calls :meth:`launch` with one engine call. Layer pickers made with :meth:`layer_choices`
    follow layers being added and removed.
    """

    run_text = "Run"
    job_name = "job"

    def __init__(self, viewer: napari.Viewer) -> None:
        self._viewer = viewer
        self._worker: Any = None
        self._cancel = CancelToken()
        self._gone = False
        self._started = 0.0
        self.run_button = PushButton(text=self.run_text, tooltip="start; while running: cancel")
        self.progress = ProgressBar(label="progress", value=0, tooltip="work done, time taken")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # object counts and failure reasons are long
        super().__init__(widgets=[self.run_button, self.progress, self.status])
        self._clock = QTimer(self.native)
        self._clock.setInterval(500)
        self._clock.timeout.connect(self._show_time)
        self.run_button.changed.connect(self._run_or_cancel)
        self.native.destroyed.connect(self._abandon)
        self.follow(viewer.layers.events.inserted, self.reset_choices)
        self.follow(viewer.layers.events.removed, self.reset_choices)
        _DOCKS.setdefault(viewer, weakref.WeakSet()).add(self)

    def add_fields(self, fields: list[Widget]) -> None:
        """Put the widgets of a subclass above the Run button."""
        for index, field in enumerate(fields):
            self.insert(index, field)

    def follow(self, signal: Signal, slot: Callable[..., Any]) -> None:
        """Connect ``slot`` to a signal that may outlive this widget, until its Qt side is gone.

        Otherwise a viewer event or :data:`models_changed` after the dock is deleted would call
        into deleted Qt widgets.
        """
        signal.connect(slot)
        self.native.destroyed.connect(lambda: signal.disconnect(slot))

    def layer_choices(self, kind: type[Layer]) -> Callable[[Any], list[tuple[str, Layer]]]:
        """Return a ``choices`` callable listing the viewer's layers of one kind, by name."""

        def choices(_: Any) -> list[tuple[str, Layer]]:
            return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

        return choices

    @property
    def viewer(self) -> napari.Viewer:
        """The viewer this dock works in."""
        return self._viewer

    @property
    def closed(self) -> bool:
        """Whether the dock (or its viewer) was closed: nothing more is shown."""
        return self._gone

    @property
    def running(self) -> bool:
        """Whether a job of this dock is running now."""
        return self._worker is not None

    def start(self) -> None:
        """Translate the fields into one engine call and :meth:`launch` it."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Ask the running job to stop at its next check (a no-op when none runs)."""
        if self.running:
            self._cancel.cancel()
            self.status.value = "cancelling..."

    def refuse(self, reason: str) -> None:
        """Say why a job does not start, in the status line and as a notification."""
        self.status.value = reason
        show_info(f"{PLUGIN_NAME}: {reason}")

    def launch(
        self,
        function: Callable[..., Any],
        *args: Any,
        done: Callable[[Any], None],
        progress: Callable[..., None] | None = None,
        message: str,
        **kwargs: Any,
    ) -> bool:
        """Run ``function(*args, **kwargs, progress=..., cancel=...)`` in a worker thread.

        ``progress`` (default: the progress bar, as ``done, total``) and ``done`` (with the
        result) run in the GUI thread; nothing is shown when the job is cancelled. Returns
        ``False``, starting nothing, while a job runs in this viewer.
        """
        busy = running_job(self._viewer)
        if busy is not None:
            self.refuse(
                f"{BUSY}a {busy.job_name} runs in this viewer ({busy.status.value}); "
                "wait, or cancel it first"
            )
            return False
        self._cancel = CancelToken()
        self._worker = create_worker(
            function,
            *args,
            **kwargs,
            progress=ensure_main_thread(self._if_shown(progress or self.show_progress)),
            cancel=self._cancel,
            _ignore_errors=True,
        )
        self._worker.returned.connect(self._if_shown(self._or_failure(done)))
        self._worker.errored.connect(self._if_shown(self._show_error))
        self._worker.finished.connect(self._finished)
        _JOBS[self._viewer] = self
        _TOKENS.add(self._cancel)
        self.run_button.text = "Cancel"
        self.status.value = message
        self.status.tooltip = ""
        self.progress.max, self.progress.value = 0, 0  # busy until the first count arrives
        self._started = time.perf_counter()
        self._show_time()
        self._clock.start()
        self._worker.start()
        return True

    def show_progress(self, done: int, total: int) -> None:
        """Show ``done`` out of ``total`` units of work; one unit shows as a moving busy bar."""
        busy = total <= 1 and done < total
        self.progress.max = 0 if busy else max(total, 1)
        self.progress.value = 0 if busy else done

    @property
    def elapsed_s(self) -> float:
        """Seconds since the current (or last) job started."""
        return time.perf_counter() - self._started

    def _show_time(self) -> None:
        self.progress.native.setFormat(f"%p%  {self.elapsed_s:.0f} s")

    def _if_shown(self, slot: Callable[..., None]) -> Callable[..., None]:
        """Drop results that arrive after the dock (or its viewer) was closed."""

        def call(*args: Any) -> None:
            if not self._gone:
                slot(*args)

        return call

    def _or_failure(self, slot: Callable[..., None]) -> Callable[..., None]:
        """Show a result, or why showing it failed: the status must never stay "running"."""

        def call(*args: Any) -> None:
            try:
                slot(*args)
            except Exception as error:  # any failure must end the job visibly
                self._show_error(error)

        return call

    def _run_or_cancel(self) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    def _abandon(self, *_: Any) -> bool:
        """Cancel for good: the dock or its viewer is closing, so nothing more is shown."""
        self._gone = True
        self._cancel.cancel()
        return True

    def other_job_ended(self, other: JobWidget) -> None:
        """Replace a "busy" refusal by the news that the viewer is free again."""
        if not self._gone and self.status.value.startswith(BUSY):
            self.status.value = f"ready: the {other.job_name} has ended"
            self.status.tooltip = ""

    def _show_error(self, error: Exception) -> None:
        if isinstance(error, Cancelled):
            self.status.value = "cancelled"
            return
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.status.value = f"failed: {reason}"
        self.status.tooltip = str(error)
        show_error(f"{PLUGIN_NAME}: {self.job_name} failed: {error}")

    def _finished(self) -> None:
        _TOKENS.discard(self._cancel)
        if _JOBS.get(self._viewer) is self:
            del _JOBS[self._viewer]
        self._worker = None
        for dock in list(_DOCKS.get(self._viewer, ())):
            if dock is not self:
                dock.other_job_ended(self)
        if self._gone:
            return
        self._clock.stop()
        self._show_time()
        self.run_button.text = self.run_text
        if self.progress.max == 0 or self.status.value.startswith(("cancelled", "failed")):
            self.progress.max, self.progress.value = 1, 0
