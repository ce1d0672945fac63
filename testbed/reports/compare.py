"""Side by side: every metric per path per CNI column, as ratios to the ceiling and to the best."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from testbed.reports import describe
from testbed.reports.model import GENERATOR_BOUND, Chart, Section, Series, Table, fnum, num
from testbed.reports.run import PERCENTILES, throughput_series_name
from testbed.results.models import baseline_kind

HTTP_METRICS = (("requests", "requests", "higher"), ("failures", "failures", "lower"),
                ("rps", "requests/s", "higher"),
                *((key, f"{label} latency (ms)", "lower") for label, key in PERCENTILES))
RESOURCE_METRICS = (("cpu_pct", "CPU (% of one core)"), ("mem_mib", "memory (MiB)"))
RESOURCES = "resources (cgroup stats)"
HOW_TO_READ = (
    "×ceiling = the value divided by the best ceiling baseline measured in the same run "
    "(container-to-container over localhost, node-to-node over the host network); ×best = the "
    "value divided by the best column's value. Lower is better for latencies, failures, CPU and "
    "memory; higher is better for requests, requests/s and Gbit/s. A ratio is blank where its "
    "reference is missing or zero.")


@dataclass
class Cell:
    """One column's figure for one metric, with its two ratios."""

    column: str
    value: float | None
    ceiling: float | None = None
    ceiling_path: str | None = None
    vs_ceiling: float | None = None
    vs_best: float | None = None
    generator_bound: bool = False


@dataclass
class Metric:
    """One row of the comparison: a metric of a path, across every column."""

    path: str
    metric: str
    label: str
    better: str
    cells: list[Cell]


def _ratio(value: float | None, ref: float | None) -> float | None:
    if value is None or ref is None:
        return None
    if value == ref:
        return 1.0
    return None if ref == 0 else value / ref


def _best(values: Sequence[float | None], better: str) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if better == "lower" else max(present)


def _http_ceiling(s: Mapping[str, Any], key: str, better: str) -> tuple[float | None, str | None]:
    rows = [b for b in s.get("baselines") or [] if baseline_kind(b) == "http"
            and b.get(key) is not None]
    if not rows:
        return None, None
    pick = (min if better == "lower" else max)(rows, key=lambda b: float(b[key]))
    return float(pick[key]), str(pick["path"])


def _tput_ceiling(s: Mapping[str, Any], proto: str, streams: int,
                  ) -> tuple[float | None, str | None]:
    rows = [b for b in s.get("baselines") or [] if baseline_kind(b) == "throughput"
            and str(b.get("protocol", "tcp")) == proto and b.get("gbit_s") is not None]
    same = [b for b in rows if int(b.get("streams") or 1) == streams] or rows
    if not same:
        return None, None
    pick = max(same, key=lambda b: float(b["gbit_s"]))
    return float(pick["gbit_s"]), f"{pick['path']} {proto} x{int(pick.get('streams') or 1)}"


def labels(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column labels, with the run id appended where two columns would read the same."""
    base = [describe.column_label(s) for s in summaries]
    seen = Counter(base)
    return [f"{b} {s.get('run_id', i)}" if seen[b] > 1 else b
            for i, (b, s) in enumerate(zip(base, summaries, strict=True))]


def metrics(summaries: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """Every metric of every path any column measured, with ratios filled in."""
    cols = labels(summaries)
    out: list[Metric] = []
    path_names = list(dict.fromkeys(str(p["path"]) for s in summaries for p in s.get("paths")
                                    or []))
    for path in path_names:
        rows = [next((p for p in s.get("paths") or [] if p["path"] == path), None)
                for s in summaries]
        for key, label, better in HTTP_METRICS:
            cells = []
            for col, s, row in zip(cols, summaries, rows, strict=True):
                ceiling, where = _http_ceiling(s, key, better)
                value = None if row is None or row.get(key) is None else float(row[key])
                cells.append(Cell(col, value, ceiling, where, _ratio(value, ceiling),
                                  generator_bound=bool(row and row.get("generator_bound"))))
            out.append(Metric(path, key, label, better, cells))
    tput_keys = list(dict.fromkeys((str(t["path"]), str(t.get("protocol", "tcp")),
                                    int(t.get("streams") or 1))
                                   for s in summaries for t in s.get("throughput") or []))
    for path, proto, streams in tput_keys:
        cells = []
        for col, s in zip(cols, summaries, strict=True):
            row = next((t for t in s.get("throughput") or [] if (
                str(t["path"]), str(t.get("protocol", "tcp")), int(t.get("streams") or 1))
                == (path, proto, streams)), None)
            value = None if row is None or row.get("gbit_s") is None else float(row["gbit_s"])
            ceiling, where = _tput_ceiling(s, proto, streams)
            cells.append(Cell(col, value, ceiling, where, _ratio(value, ceiling),
                              generator_bound=bool(row and row.get("generator_bound"))))
        name = throughput_series_name(proto, streams)
        out.append(Metric(path, f"gbit_s {proto} x{streams}", f"{name} (Gbit/s)", "higher",
                          cells))
    for phase in list(dict.fromkeys(str(r.get("phase")) for s in summaries
                                    for r in s.get("resources") or [])):
        for key, label in RESOURCE_METRICS:
            cells = [Cell(col, _sum(s, phase, key)) for col, s in zip(cols, summaries,
                                                                       strict=True)]
            out.append(Metric(RESOURCES, f"{key} {phase}",
                              f"{label}, sum of all containers, {phase}", "lower", cells))
    for m in out:
        best = _best([c.value for c in m.cells], m.better)
        for c in m.cells:
            c.vs_best = _ratio(c.value, best)
    return out


def _sum(s: Mapping[str, Any], phase: str, key: str) -> float | None:
    vals = [float(r[key]) for r in s.get("resources") or []
            if str(r.get("phase")) == phase and r.get(key) is not None]
    return sum(vals) if vals else None


def _chart(cid: str, title: str, y_label: str, ms: list[Metric], cols: list[str],
           flag: bool = False) -> Chart:
    cats = [m.path for m in ms]
    series = [Series(col, [fnum(m.cells[i].value) for m in ms]) for i, col in enumerate(cols)]
    flagged = [c for c, m in zip(cats, ms, strict=True) if flag and any(
        x.generator_bound for x in m.cells)]
    return Chart(cid, "bar", title, y_label, "path", cats, series, flagged,
                 f"⚠ {GENERATOR_BOUND} (in at least one column)" if flagged else "")


def sections(summaries: Sequence[Mapping[str, Any]]) -> tuple[list[Section], dict[str, Any]]:
    """The compare report's sections and its structured data (for report.json)."""
    cols = labels(summaries)
    ms = metrics(summaries)
    head = Section("columns", "What ran", lines=[HOW_TO_READ],
                   builds=[(describe.build_kind(s), describe.build_sentence(s))
                           for s in summaries])
    for col, s in zip(cols, summaries, strict=True):
        head.warnings += [f"{col}: {w}" for w in describe.warnings(s)]
        head.lines += [f"{col}: {line}" for line in describe.facts(s)]
    charts = Section("charts", "At a glance", charts=[
        _chart("compare-p95", "p95 latency per path", "ms",
               [m for m in ms if m.metric == "p95_ms"], cols, flag=True),
        _chart("compare-rps", "Requests per second per path", "requests/s",
               [m for m in ms if m.metric == "rps"], cols, flag=True),
        *(_chart(f"compare-{_slug(kind)}", f"Throughput per path: {label}", "Gbit/s",
                 [m for m in ms if m.metric == kind], cols, flag=True)
          for kind, label in dict.fromkeys((m.metric, m.label.removesuffix(" (Gbit/s)"))
                                           for m in ms if m.metric.startswith("gbit_s")))])
    out = [head, charts]
    header = ["metric", "better"] + [h for c in cols for h in (c, f"{c} ×ceiling",
                                                                 f"{c} ×best")]
    for path in dict.fromkeys(m.path for m in ms):
        rows: list[list[Any]] = []
        for m in (m for m in ms if m.path == path):
            rows.append([m.label, m.better] + [v for c in m.cells for v in (
                num(c.value), num(c.vs_ceiling), num(c.vs_best))])
        bound = next([c.generator_bound for c in m.cells] for m in ms if m.path == path)
        if any(bound):
            rows.append(["generator_bound", "-"] + [v for b in bound for v in (b, None, None)])
        out.append(Section(f"path-{_slug(path)}", path, tables=[
            Table(f"compare-{_slug(path)}", path, header, rows)]))
    data = {"columns": [{"label": col, "run_id": s.get("run_id"), "cni": s.get("cni"),
                         "backend": s.get("backend"), "build": describe.build_kind(s),
                         "interrupted": bool(s.get("interrupted"))}
                        for col, s in zip(cols, summaries, strict=True)],
            "metrics": [asdict(m) for m in ms]}
    return out, data


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
