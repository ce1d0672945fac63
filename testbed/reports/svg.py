"""Charts (grouped bars, lines) drawn by matplotlib as inline SVG: no JS, no fetches, no dates.

Each chart is a Figure on the Agg canvas saved as SVG with text kept as text, a fixed hash salt
and no metadata, so the same data gives the same bytes. The SVG is then marked for readers
and tests: the root carries `data-chart`/`data-kind`, each plotted series' elements
`class="series" data-series=NAME`, each legend entry `class="legend-item"`, each x tick label
`class="x-tick"`; element ids get the chart id as a prefix so charts on one page never clash.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
FLAG = "⚠"
FLAG_COLOR = "#a33"
WIDTH_IN, HEIGHT_IN = 7.6, 3.9
CHAR_W_IN = 0.066  # average width of a 10 pt tick label glyph, to decide on turning labels
RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: searchable, selectable, drawn by the browser
    "svg.hashsalt": "testbed",  # fixed ids (clip paths) instead of random ones
    "text.parse_math": False,  # a `$` in a path name is a dollar sign
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#dddddd",
    "axes.axisbelow": True,
}

BarSeries = tuple[str, Sequence[float | None]]
LineSeries = tuple[str, Sequence[tuple[float, float]]]


LEGEND_ROW_IN = 0.25


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return fig, ax


def _finish(fig: Figure, ax: Axes, names: Sequence[str], x_label: str,
            y_label: str, note: str) -> None:
    ax.set_ylabel(y_label)
    if x_label:
        ax.set_xlabel(x_label)
    if note:
        fig.supxlabel(note, x=0.01, ha="left", fontsize=9, color=FLAG_COLOR)
    if names:
        handles = [Patch(color=PALETTE[i % len(PALETTE)], label=n)
                   for i, n in enumerate(names)]
        # long names take fewer columns; each extra legend row makes the figure taller, so
        # many series (the scale plots: 4 CNIs x 2) never squeeze the axes away
        longest = max(len(n) for n in names)
        cols = min(len(names), 5 if longest <= 14 else 3 if longest <= 26 else 2)
        rows = -(-len(names) // cols)
        fig.set_figheight(HEIGHT_IN + LEGEND_ROW_IN * (rows - 1))
        legend = ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.01),
                           frameon=False, ncols=cols, fontsize=9, borderaxespad=0)
        for i, text in enumerate(legend.get_texts()):
            text.set_gid(f"legend{i}")


def _empty(ax: Axes) -> None:
    ax.set_ylim(0, 1)
    ax.set_xticks([])
    ax.text(0.5, 0.5, "no data recorded", transform=ax.transAxes, ha="center", va="center",
            color="#777777")


def _svg(fig: Figure, chart_id: str, kind: str, title: str, names: Sequence[str]) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # typed as Literal keys
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None,
                                                   "Format": None, "Type": None})
    return _mark(buf.getvalue(), chart_id, kind, title, names)


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _mark(text: str, chart_id: str, kind: str, title: str, names: Sequence[str]) -> str:
    """Plain inline SVG (no namespaces, no metadata), marked as the module docstring says."""
    root = ET.fromstring(text)
    for el in root.iter():
        el.tag = _local(el.tag)
        for key in list(el.attrib):
            if "}" in key:  # xlink:href is plain href in SVG 2
                el.attrib[_local(key)] = el.attrib.pop(key)
    for meta in root.findall("metadata"):
        root.remove(meta)
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", chart_id or "chart")
    for el in root.iter():
        gid = el.get("id")
        if gid is not None:
            if m := re.fullmatch(r"series(\d+)(?:-\d+)?", gid):
                el.set("class", "series")
                el.set("data-series", names[int(m[1])])
            elif m := re.fullmatch(r"legend(\d+)", gid):
                el.set("class", "legend-item")
                el.set("data-series", names[int(m[1])])
            elif gid.startswith("xtick_"):
                el.set("class", "x-tick")
            elif gid.startswith("legend_"):
                el.set("class", "legend")
            el.set("id", f"{prefix}-{gid}")
        for key in ("clip-path", "href"):
            ref = el.get(key)
            if ref is not None:
                el.set(key, re.sub(r"#([\w.-]+)", rf"#{prefix}-\1", ref))
    root.attrib = {"class": "chart", "data-chart": chart_id or title, "data-kind": kind,
                   "role": "img", **root.attrib}
    label = ET.Element("title")
    label.text = title
    root.insert(0, label)
    return ET.tostring(root, encoding="unicode")


def bar_chart(title: str, categories: Sequence[str], series: Sequence[BarSeries], *,
              y_label: str, x_label: str = "", chart_id: str = "",
              flagged: Collection[str] = (), note: str = "",
              intervals: Sequence[Sequence[tuple[float, float] | None]] = ()) -> str:
    """Grouped bars: one group per category, one bar per series; flagged categories get ⚠;
    `intervals[series][category]` (low, high) are drawn as error bars."""
    names = [name for name, _ in series]
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # typed as Literal keys
        fig, ax = _figure(title)
        values = [v for _, vs in series for v in vs if v is not None]
        if not values or not categories:
            _empty(ax)
            _finish(fig, ax, [], x_label, y_label, note)
            return _svg(fig, chart_id, "bar", title, [])
        width = 0.8 / max(1, len(series))
        for s_i, (_name, vals) in enumerate(series):
            for c_i, value in enumerate(vals[:len(categories)]):
                if value is None:
                    continue
                x = c_i - 0.4 + (s_i + 0.5) * width
                (bar,) = ax.bar(x, value, width * 0.95, color=PALETTE[s_i % len(PALETTE)])
                bar.set_gid(f"series{s_i}-{c_i}")
                span = intervals[s_i][c_i] if s_i < len(intervals) and \
                    c_i < len(intervals[s_i]) else None
                if span is not None:
                    low, high = span
                    err = ax.errorbar(x, value, yerr=[[max(0.0, value - low)],
                                                      [max(0.0, high - value)]],
                                      fmt="none", ecolor="#333333", capsize=3, linewidth=1)
                    err.lines[2][0].set_gid(f"interval{s_i}-{c_i}")
        labels = [f"{c} {FLAG}" if c in flagged else c for c in categories]
        longest = max(len(label) for label in labels)
        turn = longest * CHAR_W_IN > WIDTH_IN * 0.85 / len(categories)
        ax.set_xticks(range(len(categories)), labels, rotation=30 if turn else 0,
                      ha="right" if turn else "center", rotation_mode="anchor")
        for tick, category in zip(ax.get_xticklabels(), categories, strict=True):
            if category in flagged:
                tick.set_color(FLAG_COLOR)
                tick.set_fontweight("bold")
        ax.set_ylim(bottom=0)
        _finish(fig, ax, names, x_label, y_label, note)
        return _svg(fig, chart_id, "bar", title, names)


def line_chart(title: str, series: Sequence[LineSeries], *, x_label: str, y_label: str,
               chart_id: str = "", note: str = "", log_y: bool = False) -> str:
    """One line per series over a shared numeric x axis (e.g. seconds since load start);
    `log_y`: a logarithmic y axis with a marker on every point (latency versus load)."""
    names = [name for name, _ in series]
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]  # typed as Literal keys
        fig, ax = _figure(title)
        if not any(pts for _, pts in series):
            _empty(ax)
            _finish(fig, ax, [], x_label, y_label, note)
            return _svg(fig, chart_id, "line", title, [])
        for s_i, (_name, pts) in enumerate(series):
            if not pts:
                continue
            xs, ys = zip(*sorted(pts), strict=True)
            (line,) = ax.plot(xs, ys, color=PALETTE[s_i % len(PALETTE)], linewidth=2,
                              marker="o" if log_y else None, markersize=4)
            line.set_gid(f"series{s_i}")
        ax.set_xlim(left=0)
        if log_y:
            ax.set_yscale("log")
            # plain numbers: the default 10^n labels are mathtext, which is off here
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.grid(True, which="major", axis="y")
        else:
            ax.set_ylim(bottom=0)
        _finish(fig, ax, names, x_label, y_label, note)
        return _svg(fig, chart_id, "line", title, names)
