"""Trend plots: one metric over the nights, a line with markers per series (offline SVG)."""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib
from markupsafe import Markup

from testbed.reports import html, svg
from testbed.reports.model import Chart

MAX_TICKS = 10


@dataclass
class Band:
    """The rule's band around a series' baseline median, over its baseline nights."""

    series: int
    first: float
    last: float
    low: float
    high: float


@dataclass
class TrendChart(Chart):
    """A line chart over nights, with each series' band of no change."""

    bands: list[Band] = field(default_factory=list)


def trend(c: Chart) -> Markup:
    """A nightly chart (x: night number, oldest first; `categories` name the nights); other
    charts as every report draws them."""
    if not isinstance(c, TrendChart):
        return html.chart(c)
    names = [s.name for s in c.series]
    with matplotlib.rc_context(svg.RC):  # type: ignore[arg-type]  # typed as Literal keys
        fig, ax = svg._figure(c.title)
        points = [p for s in c.series for p in s.points]
        if not points:
            svg._empty(ax)
            svg._finish(fig, ax, [], c.x_label, c.y_label, c.note)
            return Markup(svg._svg(fig, c.id, "line", c.title, []))
        for i, s in enumerate(c.series):
            if not s.points:
                continue
            xs, ys = zip(*sorted(s.points), strict=True)
            (line,) = ax.plot(xs, ys, color=svg.PALETTE[i % len(svg.PALETTE)], linewidth=2,
                              marker="o", markersize=5)  # a single night is still a mark
            line.set_gid(f"series{i}")
        for b in c.bands:  # shaded: where the last night would be "within the noise"
            ax.fill_between([b.first - 0.5, b.last + 0.5], b.low, b.high, alpha=0.15,
                            color=svg.PALETTE[b.series % len(svg.PALETTE)], linewidth=0)
        n = len(c.categories)
        step = max(1, -(-n // MAX_TICKS))
        ticks = list(range(n, 0, -step))[::-1]
        ax.set_xticks(ticks, [c.categories[t - 1] for t in ticks], rotation=30, ha="right",
                      rotation_mode="anchor")
        ax.set_xlim(0.5, n + 0.5)
        low = min(y for _, y in points)  # a band below 0 is clipped, not shown
        ax.set_ylim(bottom=min(0.0, low))
        svg._finish(fig, ax, names, c.x_label, c.y_label, c.note)
        return Markup(svg._svg(fig, c.id, "line", c.title, names))
