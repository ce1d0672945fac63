"""The compare report's first screen: the verdict per metric, then the curves behind it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _ratio_rows(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str]
                ) -> tuple[list[str], list[Series]]:
    """TCP x1 Gbit/s of each pod path over the same run's node-to-node floor (1.0)."""
    paths: list[str] = []
    values: dict[str, dict[str, float]] = {}
    for label, s in zip(labels, summaries, strict=True):
        floors = [float(b["gbit_s"]) for b in s.get("baselines") or []
                  if b.get("gbit_s") and b.get("path") == "node-to-node"
                  and b.get("protocol", "tcp") == "tcp" and int(b.get("streams") or 1) == 1]
        if not floors:
            continue
        floor = sorted(floors)[len(floors) // 2]
        for t in s.get("throughput") or []:
            if t.get("protocol", "tcp") == "tcp" and int(t.get("streams") or 1) == 1 \
                    and t.get("gbit_s") is not None:
                path = str(t["path"])
                if path not in paths:
                    paths.append(path)
                values.setdefault(label, {}).setdefault(path, float(t["gbit_s"]) / floor)
    return paths, [Series(c, [fnum(values.get(c, {}).get(p)) for p in paths]) for c in labels]


def curves_section(rows: Sequence[VerdictRow], summaries: Sequence[Mapping[str, Any]],
                   labels: Sequence[str]) -> Section:
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
    paths, series = _ratio_rows(summaries, labels)
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
