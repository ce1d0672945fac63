"""The compare report's first screen: the verdict per metric, then the curves behind it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from testbed.analysis.verdicts import VerdictRow
from testbed.reports.model import Cell, Chart, Section, Series, Table, fnum, num

HOW = ("Each figure is the median of the trials with its 95% Student-t interval. A winner is "
       "named only when the difference is outside both CNIs' noise: {test}. Otherwise the row "
       "says no difference. Floors (no CNI on the path) and generator-bound figures are shown "
       "and never ranked.")


def _figure_text(row: VerdictRow, label: str) -> str:
    f = row.figures.get(label)
    if f is None:
        return "-"
    if not f.has_interval:
        return f"{f.median:.4g}"
    return f"{f.median:.4g} [{f.low:.4g}, {f.high:.4g}]"


def verdict_section(rows: Sequence[VerdictRow], labels: Sequence[str]) -> Section:
    """One row per ranked metric: winner, margin, significance and the one-line why."""
    header = ["metric", "unit", "better", *labels, "winner", "margin", "significant", "why"]
    body: list[list[Cell]] = []
    for r in rows:
        if not r.ranked:
            continue
        body.append([r.metric, r.unit, r.better, *(_figure_text(r, c) for c in labels),
                     r.winner or "no difference", num(r.margin) if r.winner else None,
                     r.significant, r.why or r.reason])
    floors: list[list[Cell]] = [[r.metric, r.unit, *(_figure_text(r, c) for c in labels), r.reason]
              for r in rows if not r.ranked]
    tables = [Table("verdict", "Verdict per metric", header, body)]
    if floors:
        tables.append(Table("verdict-floors", "Floors and figures not ranked",
                            ["metric", "unit", *labels, "why not ranked"], floors,
                            collapsed=True))
    test = rows[0].test if rows else "Welch's t-test"
    return Section("verdict", "Verdict", lines=[HOW.format(test=test)], tables=tables)


def _by(rows: Sequence[VerdictRow], prefix: str, suffix: str) -> list[VerdictRow]:
    return [r for r in rows if r.metric.startswith(prefix) and r.metric.endswith(suffix)]


def _bars(cid: str, title: str, unit: str, rows: Sequence[VerdictRow], labels: Sequence[str],
          category: Any) -> Chart:
    """Medians as bars with their intervals as error bars, one group per metric row."""
    return Chart(cid, "bar", title, unit, "path", [category(r) for r in rows],
                 [Series(c, [fnum(r.figures[c].median) if c in r.figures else None
                             for r in rows],
                         intervals=[(r.figures[c].low, r.figures[c].high)
                                    if c in r.figures and r.figures[c].has_interval else None
                                    for r in rows]) for c in labels])


def _path(r: VerdictRow) -> str:
    return r.metric.split(".")[1]


def _fault(r: VerdictRow) -> str:
    """`nodeport partition@15s` from `faults.nodeport.partition@15s.failed_share`."""
    parts = r.metric.split(".")
    return " ".join(parts[1:-1])


FLOOR_TCP = "throughput.node-to-node.tcpx1.gbit_s"


def _ratio_rows(rows: Sequence[VerdictRow], labels: Sequence[str]
                ) -> tuple[list[str], list[Series]]:
    """Each pod path's median TCP x1 Gbit/s over the same run's median node-to-node floor."""
    floor = next((r for r in rows if r.metric == FLOOR_TCP), None)
    if floor is None:
        return [], []
    pods = [r for r in _by(rows, "throughput.", ".tcpx1.gbit_s") if r.metric != FLOOR_TCP]

    def ratio(r: VerdictRow, label: str) -> float | None:
        top, bottom = r.figures.get(label), floor.figures.get(label)
        return fnum(top.median / bottom.median) if top and bottom and bottom.median else None

    return [_path(r) for r in pods], [Series(c, [ratio(r, c) for r in pods]) for c in labels]


def curves_section(rows: Sequence[VerdictRow], labels: Sequence[str]) -> Section:
    """RR and CRR percentiles, throughput against the floor, CPU per unit of work."""
    charts = []
    for kind, name in (("rr", "RR (sockperf ping-pong)"), ("crr", "CRR (new connection per "
                                                               "request)")):
        for stat, word in (("p50_us", "p50"), ("p99_us", "p99")):
            found = _by(rows, "latency.", f".{kind}.{stat}")
            if found:
                charts.append(_bars(f"curve-{kind}-{word}", f"{name}: {word} round trip",
                                    "µs", found, labels, _path))
    tput = _by(rows, "throughput.", "tcpx1.gbit_s")
    if tput:
        charts.append(_bars("curve-tcp", "TCP x1 throughput", "Gbit/s", tput, labels, _path))
    paths, series = _ratio_rows(rows, labels)
    if paths:
        charts.append(Chart("curve-tcp-ratio", "bar", "TCP x1 throughput over node-to-node "
                            "(no CNI = 1.0)", "× floor", "path", paths, series))
    for unit, title in (("per_gbit", "CPU-seconds per Gbit moved"),
                        ("per_1000_requests", "CPU-seconds per 1000 requests")):
        for role in ("cni", "node"):
            found = _by(rows, "cost.", f".{role}_cpu_s_{unit}")
            if found:
                charts.append(_bars(f"curve-cost-{role}-{unit}", f"{title}: {role} "
                                    "containers", "CPU-s", found, labels, _path))
    for stat, title, unit in (("failed_share", "Failed-request share per fault", "share"),
                              ("control_plane_s", "Control plane back after each fault", "s")):
        found = _by(rows, "faults.", f".{stat}")
        if found:
            charts.append(_bars(f"curve-faults-{stat}", title, unit, found, labels, _fault))
    return Section("curves", "The curves behind the verdict", charts=charts,
                   lines=[] if charts else ["no RR/CRR, throughput or cost figures recorded"])
