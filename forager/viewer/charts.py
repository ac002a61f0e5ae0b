"""The dashboard's charts as SVG drawn on the server: horizontal bars (rates, counts) and histograms.

Only geometry is computed here; ``templates/charts.html`` writes the SVG, autoescaped like every page,
and the stylesheet colours it (classes, no inline styles: the Content-Security-Policy forbids them). No
script runs, so the charts work offline, in a static export, and with scripts disabled. A bar's tooltip
is its SVG ``<title>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from storage.viewer_queries import Histogram

WIDTH = 640
ROW = 24
LABEL = 190
"""Width of the label column of a bar chart."""
VALUE = 110
"""Width of the value column at the right of a bar chart."""


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str
    css: str = "bar"
    href: str | None = None


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "start"
    css: str = "label"
    href: str | None = None
    title: str = ""


@dataclass(frozen=True)
class Chart:
    width: float
    height: float
    bars: list[Bar] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    tracks: list[Bar] = field(default_factory=list)
    """Full-width backgrounds of rate bars, so 100% is visible."""
    axis: list[tuple[float, float, float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    """One bar: ``value`` in [0, 1] of the bar's width, with the text shown at its end."""

    label: str
    value: float
    shown: str
    title: str
    href: str | None = None
    css: str = "bar"


def bars(rows: Sequence[Row]) -> Chart:
    """A horizontal bar chart, one row per item, labels at the left, values at the right."""
    span = WIDTH - LABEL - VALUE
    chart = Chart(WIDTH, ROW * len(rows) + 4)
    for i, row in enumerate(rows):
        y = i * ROW + 2
        label = row.label if len(row.label) <= 28 else row.label[:27] + "…"
        chart.texts.append(Text(LABEL - 8, y + ROW * 0.68, label, "end", "label", row.href, row.label))
        chart.tracks.append(Bar(LABEL, y + 3, span, ROW - 6, row.title, "track"))
        width = max(0.0, min(1.0, row.value)) * span
        chart.bars.append(Bar(LABEL, y + 3, width, ROW - 6, row.title, row.css, row.href))
        chart.texts.append(Text(LABEL + span + 8, y + ROW * 0.68, row.shown, "start", "value"))
    return chart


def histogram(figures: Histogram, unit: str, height: float = 170) -> Chart:
    """Columns of ``figures`` with the count axis at the left and the bins' lower bounds below."""
    left, bottom, top = 48.0, 22.0, 10.0
    chart = Chart(WIDTH, height)
    if not figures.counts:
        chart.texts.append(Text(WIDTH / 2, height / 2, "no episodes", "middle", "empty"))
        return chart
    peak = max(figures.counts)
    plot_width, plot_height = WIDTH - left - 8, height - bottom - top
    column = plot_width / len(figures.counts)
    every = max(1, round(len(figures.counts) / 8))
    for i, count in enumerate(figures.counts):
        low = figures.start + i * figures.width
        high = low + figures.width - 1
        span = f"{low:,}" if high == low else f"{low:,}-{high:,}"
        h = plot_height * count / peak if peak else 0
        x = left + i * column
        chart.bars.append(
            Bar(x + 1, top + plot_height - h, max(column - 2, 1), h, f"{span} {unit}: {count:,}")
        )
        if i % every == 0:
            chart.texts.append(Text(x + column / 2, height - 6, _short(low), "middle", "tick"))
    chart.texts.append(Text(left - 6, top + 9, f"{peak:,}", "end", "tick"))
    chart.texts.append(Text(left - 6, top + plot_height, "0", "end", "tick"))
    chart.axis.append((left, top + plot_height, WIDTH - 8, top + plot_height))
    return chart


def _short(value: int) -> str:
    """12, 1.2k, 34k, 1.5M: tick labels that fit under a column."""
    if value < 1000:
        return str(value)
    if value < 1_000_000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    return f"{value / 1_000_000:.1f}M".replace(".0M", "M")
