"""A dock widget that runs one engine call at a time in a worker, with Run turning into Cancel.

The engine reports progress through a callback and stops at its next check once the
:class:`CancelToken` is set; this class only carries those two across threads, so the viewer
keeps answering while a U-Net runs or trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from magicgui.widgets import Container, Label, ProgressBar, PushButton, Widget
from napari.layers import Layer
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from superqt.utils import ensure_main_thread

from napari_unet.core.progress import Cancelled, CancelToken

if TYPE_CHECKING:
    import napari


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
        self.run_button = PushButton(text=self.run_text)
        self.progress = ProgressBar(label="progress", value=0)
        self.status = Label(value="")
        super().__init__(widgets=[self.run_button, self.progress, self.status])
        self.run_button.changed.connect(self._run_or_cancel)
        self.follow(viewer.layers.events.inserted, self.reset_choices)
        self.follow(viewer.layers.events.removed, self.reset_choices)

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
    def running(self) -> bool:
        """Whether a job is running now."""
        return self._worker is not None

    def start(self) -> None:
        """Translate the fields into one engine call and :meth:`launch` it."""
        raise NotImplementedError

    def launch(
        self,
        function: Callable[..., Any],
        *args: Any,
        done: Callable[[Any], None],
        progress: Callable[..., None] | None = None,
        message: str,
        **kwargs: Any,
    ) -> None:
        """Run ``function(*args, **kwargs, progress=..., cancel=...)`` in a worker thread.

        ``progress`` (default: the progress bar, as ``done, total``) and ``done`` (with the
        result) run in the GUI thread; nothing is shown when the job is cancelled.
        """
        self._cancel = CancelToken()
        self._worker = create_worker(
            function,
            *args,
            **kwargs,
            progress=ensure_main_thread(progress or self.show_progress),
            cancel=self._cancel,
            _ignore_errors=True,
        )
        self._worker.returned.connect(done)
        self._worker.errored.connect(self._show_error)
        self._worker.finished.connect(self._finished)
        self.run_button.text = "Cancel"
        self.status.value = message
        self.progress.value = 0
        self._worker.start()

    def show_progress(self, done: int, total: int) -> None:
        """Show ``done`` out of ``total`` units of work on the progress bar."""
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _run_or_cancel(self) -> None:
        if self.running:
            self._cancel.cancel()
            self.status.value = "cancelling..."
        else:
            self.start()

    def _show_error(self, error: Exception) -> None:
        if isinstance(error, Cancelled):
            self.status.value = "cancelled"
            return
        self.status.value = "failed"
        show_error(f"napari-unet: {self.job_name} failed: {error}")

    def _finished(self) -> None:
        self._worker = None
        self.run_button.text = self.run_text
