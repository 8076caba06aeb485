"""A live line plot for the Train dock, drawn with QPainter (no plotting library needed)."""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

COLORS = ("#f0a030", "#40b0f0", "#80e080", "#e070e0")


class LossPlot(QWidget):
    """Curves of training loss and validation metrics against optimiser steps.

    Each curve is scaled to its own range (loss and AP differ in scale); the legend gives
    each one's latest value, which is what a user watches to decide when to stop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(140)
        self.series: dict[str, list[tuple[float, float]]] = {}

    def clear(self) -> None:
        """Forget all curves (a new training run starts)."""
        self.series.clear()
        self.update()

    def add(self, name: str, step: float, value: float) -> None:
        """Append one point to the curve ``name`` and redraw."""
        self.series.setdefault(name, []).append((step, value))
        self.update()

    def paintEvent(self, event: object) -> None:
        """Draw the frame, the curves and the legend."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        box = self.rect().adjusted(8, 8, -8, -8 - 16 * max(1, len(self.series)))
        painter.setPen(QPen(QColor("#808080")))
        painter.drawRect(box)
        last_step = max((s for points in self.series.values() for s, _ in points), default=1.0)
        for index, (name, points) in enumerate(self.series.items()):
            color = QColor(COLORS[index % len(COLORS)])
            values = [value for _, value in points]
            low, span = min(values), (max(values) - min(values)) or 1.0
            curve = QPolygonF(
                [
                    QPointF(
                        box.left() + box.width() * step / max(last_step, 1.0),
                        box.bottom() - box.height() * (value - low) / span,
                    )
                    for step, value in points
                ]
            )
            painter.setPen(QPen(color, 2))
            painter.drawPolyline(curve)
            painter.drawText(
                box.left(),
                box.bottom() + 16 * (index + 1),
                f"{name}: {values[-1]:.3f} (range {low:.3f}-{low + span:.3f})",
            )
        if not self.series:
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "loss and metrics appear here")
        painter.end()
