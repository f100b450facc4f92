"""A bar chart's geometry for server-rendered SVG (the console's "emails sent per day").

Pure: numbers in, rectangles and labels out; the template draws them as ``<rect>`` and
``<text>`` elements styled by classes in the console's stylesheet. Server-rendered SVG rather
than a charting library: it needs no JavaScript (the console runs under ``script-src 'self'``
with no inline scripts and no third-party code), it shows before any script would load, prints,
and a screen reader gets the same numbers from the table beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class AxisLabel:
    x: float
    text: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    labels: tuple[AxisLabel, ...]
    plot_left: float
    plot_bottom: float
    plot_right: float


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10ⁿ (n ≥ 0) at least `value`: a y-axis that ends on a round number."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover (the loop always returns)


def bar_chart(points: list[tuple[str, int]], *, width: int = 640, height: int = 200, label_every: int = 7) -> BarChart:
    """Bars for `points` ``(label, value)`` left to right, a y-axis from 0 to a round maximum
    with round ticks, and every `label_every`-th label under its bar counting back from the last."""
    left, right, top, bottom = 40.0, 8.0, 8.0, 24.0
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = nice_ceiling(max((v for _, v in points), default=0))
    slot = plot_w / max(len(points), 1)
    bars, labels = [], []
    for i, (label, value) in enumerate(points):
        bar_h = plot_h * value / top_value
        x = left + i * slot + slot * 0.15
        bars.append(
            Bar(round(x, 2), round(top + plot_h - bar_h, 2), round(slot * 0.7, 2), round(bar_h, 2), label, value)
        )
        if (len(points) - 1 - i) % label_every == 0:  # counted from the newest, which is always labelled
            labels.append(AxisLabel(round(left + i * slot + slot / 2, 2), label))
    step = nice_ceiling(math.ceil(top_value / 5))  # at most six ticks, each a round number
    ticks = tuple(Tick(round(top + plot_h - plot_h * v / top_value, 2), v) for v in range(0, top_value + 1, step))
    return BarChart(width, height, tuple(bars), ticks, tuple(labels), left, top + plot_h, width - right)
