"""Helpers shared by the napari dock tests."""

from __future__ import annotations

from typing import Any


def run(widget: Any, qtbot: Any) -> None:
    """Press a dock's run button and wait until its job has ended."""
    widget.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
