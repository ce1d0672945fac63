"""Inline SVG charts (grouped bars, lines) with axes, labels and a legend: no JS, no fetches."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from html import escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
FLAG = "⚠"
CHAR_W = 6.6  # average glyph width of the 12px sans-serif labels, for layout estimates

BarSeries = tuple[str, Sequence[float | None]]
LineSeries = tuple[str, Sequence[tuple[float, float]]]


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 to at least `top` in round steps (1, 2, 2.5 or 5 times a power of ten)."""
    if not top or top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.3g}"


def _attr(s: str) -> str:
    return escape(s, quote=True)


class _Frame:
    """Shared layout: title, legend rows, plot area, y axis with grid."""

    def __init__(self, title: str, names: Sequence[str], width: int, plot_h: int,
                 labels_h: float, note: bool, left: float = 70.0) -> None:
        self.rows = self._legend_rows(names, width - 90)
        self.top = 34 + 18 * len(self.rows) + 8
        self.left, self.right = left, 16.0
        self.plot_w = width - self.left - self.right
        self.plot_h = float(plot_h)
        self.labels_h = labels_h  # room under the x axis for tick or category labels
        self.bottom = labels_h + 26 + (18 if note else 0)
        self.width, self.height = width, int(self.top + self.plot_h + self.bottom)
        self.title = title

    @staticmethod
    def _legend_rows(names: Sequence[str], room: float) -> list[list[str]]:
        rows: list[list[str]] = [[]]
        used = 0.0
        for name in names:
            w = 22 + CHAR_W * len(name) + 16
            if rows[-1] and used + w > room:
                rows.append([])
                used = 0.0
            rows[-1].append(name)
            used += w
        return rows if rows[0] else []

    def y(self, value: float, top: float) -> float:
        return self.top + self.plot_h - (value / top) * self.plot_h

    def open(self, chart_id: str, kind: str) -> list[str]:
        return [f'<svg class="chart" data-chart="{_attr(chart_id)}" data-kind="{kind}" '
                f'width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" role="img" '
                f'font-family="sans-serif" font-size="12">',
                f"<title>{escape(self.title)}</title>",
                f'<text x="{self.width / 2:.1f}" y="20" text-anchor="middle" font-size="15" '
                f'font-weight="bold">{escape(self.title)}</text>']

    def legend(self, names: Sequence[str], colors: dict[str, str]) -> list[str]:
        out = ['<g class="legend">']
        for i, row in enumerate(self.rows):
            x, y = self.left, 34 + 18 * i
            for name in row:
                out.append(f'<g class="legend-item" data-series="{_attr(name)}">'
                           f'<rect x="{x:.1f}" y="{y:.1f}" width="14" height="12" '
                           f'fill="{colors[name]}"/>'
                           f'<text x="{x + 20:.1f}" y="{y + 10.5:.1f}">{escape(name)}</text></g>')
                x += 22 + CHAR_W * len(name) + 16
        out.append("</g>")
        return out

    def y_axis(self, ticks: list[float], label: str) -> list[str]:
        out = ['<g class="y-axis">']
        x0, x1 = self.left, self.left + self.plot_w
        for t in ticks:
            y = self.y(t, ticks[-1])
            out.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" '
                       f'stroke="#ddd"/><text x="{x0 - 6:.1f}" y="{y + 4:.1f}" '
                       f'text-anchor="end">{_num(t)}</text>')
        cy = self.top + self.plot_h / 2
        out.append(f'<text x="16" y="{cy:.1f}" text-anchor="middle" '
                   f'transform="rotate(-90 16 {cy:.1f})">{escape(label)}</text>')
        out.append(f'<line x1="{x0:.1f}" y1="{self.top:.1f}" x2="{x0:.1f}" '
                   f'y2="{self.top + self.plot_h:.1f}" stroke="#333"/>')
        out.append(f'<line x1="{x0:.1f}" y1="{self.top + self.plot_h:.1f}" x2="{x1:.1f}" '
                   f'y2="{self.top + self.plot_h:.1f}" stroke="#333"/></g>')
        return out

    def footer(self, x_label: str, note: str) -> list[str]:
        out = []
        y = self.top + self.plot_h + self.labels_h + 18
        if x_label:
            out.append(f'<text x="{self.left + self.plot_w / 2:.1f}" y="{y:.1f}" '
                       f'text-anchor="middle">{escape(x_label)}</text>')
        if note:
            out.append(f'<text class="note" x="{self.left:.1f}" y="{y + 18:.1f}" '
                       f'fill="#a33">{escape(note)}</text>')
        return out

    def empty(self) -> list[str]:
        return [f'<text x="{self.left + self.plot_w / 2:.1f}" '
                f'y="{self.top + self.plot_h / 2:.1f}" text-anchor="middle" fill="#777">'
                "no data recorded</text>"]


def bar_chart(title: str, categories: Sequence[str], series: Sequence[BarSeries], *,
              y_label: str, x_label: str = "", chart_id: str = "",
              flagged: Collection[str] = (), note: str = "", width: int = 760,
              plot_h: int = 240) -> str:
    """Grouped bars: one group per category, one bar per series; flagged categories get ⚠."""
    names = [name for name, _ in series]
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    labels = [f"{c} {FLAG}" if c in flagged else c for c in categories]
    slot = (width - 86) / max(1, len(categories))
    longest = max((len(s) for s in labels), default=0)
    rotate = longest * CHAR_W > slot - 6
    # A label turned 30 degrees needs sin(30) of its length below the axis and, for the first
    # category, cos(30) of it left of its bar group.
    first = len(labels[0]) * CHAR_W * 0.87 - slot / 2 + 8 if rotate and labels else 0.0
    f = _Frame(title, names, width, plot_h, 22 + (longest * CHAR_W * 0.5 if rotate else 0),
               bool(note), left=max(70.0, min(first, width / 3)))
    out = f.open(chart_id or title, "bar")
    values = [v for _, vs in series for v in vs if v is not None]
    if not values or not categories:
        return "\n".join([*out, *f.y_axis([0.0, 1.0], y_label), *f.empty(),
                          *f.footer(x_label, note), "</svg>"])
    ticks = nice_ticks(max(values))
    out += f.legend(names, colors) + f.y_axis(ticks, y_label)
    slot = f.plot_w / len(categories)
    bar_w = slot * 0.8 / max(1, len(series))
    for s_i, (name, vals) in enumerate(series):
        out.append(f'<g class="series" data-series="{_attr(name)}" fill="{colors[name]}">')
        for c_i, value in enumerate(vals[:len(categories)]):
            if value is None:
                continue
            x = f.left + c_i * slot + slot * 0.1 + s_i * bar_w
            y = f.y(value, ticks[-1])
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                       f'height="{f.top + f.plot_h - y:.1f}"><title>{escape(categories[c_i])}, '
                       f"{escape(name)}: {_num(value)}</title></rect>")
        out.append("</g>")
    out.append('<g class="x-axis">')
    for c_i, label in enumerate(labels):
        x = f.left + (c_i + 0.5) * slot
        y = f.top + f.plot_h + 16
        color = ' fill="#a33" font-weight="bold"' if categories[c_i] in flagged else ""
        turn = f' transform="rotate(-30 {x:.1f} {y:.1f})" text-anchor="end"' if rotate else (
            ' text-anchor="middle"')
        out.append(f'<text x="{x:.1f}" y="{y:.1f}"{turn}{color}>{escape(label)}</text>')
    out.append("</g>")
    return "\n".join([*out, *f.footer(x_label, note), "</svg>"])


def line_chart(title: str, series: Sequence[LineSeries], *, x_label: str, y_label: str,
               chart_id: str = "", note: str = "", width: int = 760, plot_h: int = 240) -> str:
    """One line per series over a shared numeric x axis (e.g. seconds since load start)."""
    names = [name for name, _ in series]
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    f = _Frame(title, names, width, plot_h, 22, bool(note))
    out = f.open(chart_id or title, "line")
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    if not xs:
        return "\n".join([*out, *f.y_axis([0.0, 1.0], y_label), *f.empty(),
                          *f.footer(x_label, note), "</svg>"])
    y_ticks = nice_ticks(max(ys))
    x_ticks = nice_ticks(max(xs), 8)
    x_top = x_ticks[-1]

    def px(x: float) -> float:
        return f.left + (x / x_top) * f.plot_w

    out += f.legend(names, colors) + f.y_axis(y_ticks, y_label)
    out.append('<g class="x-axis">')
    for t in x_ticks:
        out.append(f'<text x="{px(t):.1f}" y="{f.top + f.plot_h + 16:.1f}" '
                   f'text-anchor="middle">{_num(t)}</text>')
    out.append("</g>")
    for name, pts in series:
        if not pts:
            continue
        coords = " ".join(f"{px(x):.1f},{f.y(y, y_ticks[-1]):.1f}" for x, y in sorted(pts))
        out.append(f'<g class="series" data-series="{_attr(name)}">'
                   f'<polyline points="{coords}" fill="none" stroke="{colors[name]}" '
                   f'stroke-width="2"><title>{escape(name)}</title></polyline></g>')
    return "\n".join([*out, *f.footer(x_label, note), "</svg>"])
