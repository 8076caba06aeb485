"""A live line plot for the Train dock, drawn with QPainter (no plotting library needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRect, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

COLORS = ("#f0a030", "#40b0f0", "#80e080", "#e070e0")
AXIS_COLOR = "#a0a0a0"
MARGIN = {"left": 46, "right": 46, "top": 8, "bottom": 34}
"""Room around the plot area for tick labels (pixels); the legend goes below."""
LEGEND_LINE = 16


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``low..high``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= 0.7 * raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


class LossPlot(QWidget):
    """Curves of training loss and validation metrics against optimiser steps.

    The first curve (the training loss) is read on the left axis, the second (the validation
    score) on the right one, the steps along the bottom; the legend gives each curve's latest
    value, which is what a user watches to decide when to stop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(190)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setToolTip("training loss (left axis) and validation score (right axis) per step")

    def clear(self) -> None:
        """Forget all curves (a new training run starts)."""
        self.series.clear()
        self.update()

    def add(self, name: str, step: float, value: float) -> None:
        """Append one point to the curve ``name`` and redraw."""
        self.series.setdefault(name, []).append((step, value))
        self.update()

    def plot_area(self) -> QRect:
        """Return where the curves go: inside the axes' tick labels, above the legend."""
        legend = LEGEND_LINE * max(1, len(self.series))
        return self.rect().adjusted(
            MARGIN["left"], MARGIN["top"], -MARGIN["right"], -MARGIN["bottom"] - legend
        )

    def paintEvent(self, event: object) -> None:
        """Draw the axes, the curves and the legend."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        box = self.plot_area()
        painter.setPen(QPen(QColor(AXIS_COLOR)))
        painter.drawRect(box)
        if not self.series:
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "loss and metrics appear here")
            painter.end()
            return
        last_step = max(max(s for points in self.series.values() for s, _ in points), 1.0)
        self._draw_step_axis(painter, box, last_step)
        for index, (name, points) in enumerate(self.series.items()):
            color = QColor(COLORS[index % len(COLORS)])
            values = [value for _, value in points]
            ticks = nice_ticks(min(values), max(values))
            low, high = min(values + ticks), max(values + ticks)
            span = (high - low) or 1.0
            if index < 2:
                self._draw_value_axis(painter, box, ticks, low, span, color, left=index == 0)
            curve = QPolygonF(
                [
                    QPointF(
                        box.left() + box.width() * step / last_step,
                        box.bottom() - box.height() * (value - low) / span,
                    )
                    for step, value in points
                ]
            )
            painter.setPen(QPen(color, 2))
            painter.drawPolyline(curve)
            side = "left" if index == 0 else "right" if index == 1 else "own scale"
            painter.drawText(
                box.left(),
                box.bottom() + MARGIN["bottom"] + 12 + LEGEND_LINE * index,
                f"{name} ({side}): {values[-1]:.3f}",
            )
        painter.end()

    def _draw_step_axis(self, painter: QPainter, box: QRect, last_step: float) -> None:
        painter.setPen(QPen(QColor(AXIS_COLOR)))
        for tick in nice_ticks(0.0, last_step):
            x = round(box.left() + box.width() * tick / last_step)
            painter.drawLine(x, box.bottom(), x, box.bottom() + 4)
            painter.drawText(
                QRect(x - 30, box.bottom() + 5, 60, 14), Qt.AlignmentFlag.AlignHCenter, f"{tick:g}"
            )
        painter.drawText(
            QRect(box.left(), box.bottom() + 18, box.width(), 14),
            Qt.AlignmentFlag.AlignHCenter,
            "optimiser steps",
        )

    def _draw_value_axis(
        self,
        painter: QPainter,
        box: QRect,
        ticks: list[float],
        low: float,
        span: float,
        color: QColor,
        left: bool,
    ) -> None:
        painter.setPen(QPen(color))
        align = Qt.AlignmentFlag.AlignRight if left else Qt.AlignmentFlag.AlignLeft
        for tick in ticks:
            y = round(box.bottom() - box.height() * (tick - low) / span)
            edge = box.left() if left else box.right()
            painter.drawLine(edge - 4 if left else edge, y, edge if left else edge + 4, y)
            label = QRect(
                edge - MARGIN["left"] if left else edge + 6, y - 7, MARGIN["left"] - 6, 14
            )
            painter.drawText(label, align | Qt.AlignmentFlag.AlignVCenter, f"{tick:.3g}")
