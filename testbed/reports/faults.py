"""The fault sections: per run a timeline chart per fault with its recovery figures; in a
comparison, each fault side by side across the columns."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from testbed.load.locust import totals
from testbed.reports.model import Chart, Section, Series, Table, num

BEFORE_S, AFTER_S = 10.0, 25.0  # the chart's span around each fault window
COLUMNS = ("path", "trial", "fault", "window_s", "failed_share", "throughput_drop",
           "first_failure_s", "first_success_after_s", "last_failure_after_s", "p95_back_s",
           "p99_back_s",
           "control_plane_s", "new_pod", "error_kinds", "error")


def kinds_text(kinds: Any) -> str | None:
    """`timeout 85, connection_refused 3`: failed requests by kind, the most frequent first."""
    if not isinstance(kinds, Mapping):
        return None
    if not kinds:
        return "none"
    return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def _cell(f: Mapping[str, Any], column: str) -> Any:
    """A table cell; `new_pod` says whether a pod created during the fault got an address."""
    if column == "error_kinds":
        return kinds_text(f.get(column))
    if column != "new_pod":
        return num(f.get(column))
    pod = f.get("new_pod")
    if not isinstance(pod, Mapping):
        return None
    if pod.get("addressed"):
        return f"addressed on {pod.get('node')} in {pod.get('s')} s"
    return f"no address on {pod.get('node')}: {pod.get('error', '')}"


def _points(ts: Sequence[Mapping[str, Any]], t0: float, end: float
            ) -> tuple[list[tuple[float, float]], list[tuple[float, float]],
                       list[tuple[float, float]]]:
    """(ok/s, failed/s, p95 ms) around one fault, x in seconds from BEFORE_S before it."""
    ok, bad, p95 = [], [], []
    prev: Mapping[str, Any] | None = None
    for r in sorted(ts, key=lambda r: float(r["t"])):
        t = float(r["t"])
        if prev is not None and t0 - BEFORE_S <= t <= end + AFTER_S:
            dt = max(t - float(prev["t"]), 1.0)
            req = float(r.get("requests") or 0) - float(prev.get("requests") or 0)
            fail = float(r.get("failures") or 0) - float(prev.get("failures") or 0)
            x = t - t0 + BEFORE_S
            ok.append((x, max(req - fail, 0.0) / dt))
            bad.append((x, max(fail, 0.0) / dt))
            p95.append((x, float(r.get("p95_ms") or 0.0)))
        prev = r
    return ok, bad, p95


def section(s: Mapping[str, Any], pre: str) -> Section | None:
    """None for a run without a fault timeline."""
    faults = s.get("faults") or {}
    if not faults:
        return None
    sec = Section(f"{pre}faults", "Faults and recovery")
    rows = []
    for path, played in faults.items():
        ts = [r for r in s.get("timeseries") or [] if r.get("path") == path]
        for i, f in enumerate(played or []):
            rows.append([_cell(f, c) if c != "path" else path for c in COLUMNS])
            if "applied" not in f or not ts:
                continue
            t0, end = float(f["applied"]), float(f["end"])
            ok, bad, p95 = _points(ts, t0, end)
            top = max([y for _, y in ok + bad] or [1.0])
            a, b = BEFORE_S, BEFORE_S + end - t0
            window = [(0.0, 0.0), (a - 0.01, 0.0), (a, top), (b, top), (b + 0.01, 0.0),
                      (b + AFTER_S, 0.0)]
            sec.charts.append(Chart(
                f"{pre}fault-{i}-{path}", "line", f"{f.get('fault')} ({path})", "requests/s",
                f"s (the fault took effect at {BEFORE_S:g} s; its window is the raised line)",
                series=[Series("ok/s", points=ok), Series("failed/s", points=bad),
                        Series("fault window", points=window)]))
            sec.charts.append(Chart(
                f"{pre}fault-{i}-{path}-p95", "line", f"p95 around {f.get('fault')} ({path})",
                "ms", f"s (the fault took effect at {BEFORE_S:g} s)",
                series=[Series("p95", points=p95)]))
    sec.tables.append(Table(f"{pre}faults-rows", "Recovery per fault", list(COLUMNS), rows))
    for path, trials in (s.get("errors") or {}).items():
        for e in trials or []:
            trial = f", trial {e['trial']}" if e.get("trial") else ""
            sec.lines.append(f"{path}{trial}: failed requests by kind over the phase "
                             f"({e.get('from')}): {kinds_text(e.get('kinds'))}")
    return sec


SIDE_BY_SIDE = ("failed_share", "first_success_after_s", "control_plane_s")


def _median(docs: Sequence[Mapping[str, Any]], key: str) -> Any:
    vals = [float(d[key]) for d in docs if isinstance(d.get(key), (int, float))]
    return num(statistics.median(vals)) if vals else None


def _kinds(docs: Sequence[Mapping[str, Any]]) -> str | None:
    """Every trial's error kinds added up."""
    counted = [d["error_kinds"] for d in docs if isinstance(d.get("error_kinds"), Mapping)]
    return kinds_text(totals([{"kind": k, "count": n} for kinds in counted
                              for k, n in kinds.items()])) if counted else None


def compare_section(labels: Sequence[str], summaries: Sequence[Mapping[str, Any]]
                    ) -> Section | None:
    """One row per path and fault of the timeline (kind and time), per column the median over
    its trials of the failed share, the time to the first success after the fault and the
    control plane's recovery, and the error kinds of every trial; None without faults."""
    found: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for label, s in zip(labels, summaries, strict=True):
        for path, docs in (s.get("faults") or {}).items():
            for d in docs or []:
                if isinstance(d, Mapping) and "applied" in d:
                    key = (path, f"{d.get('kind')}@{float(d.get('at_s') or 0):g}s")
                    found.setdefault(key, {}).setdefault(label, []).append(d)
    if not found:
        return None
    header = ["path", "fault"] + [f"{c} {stat}" for c in labels
                                  for stat in (*SIDE_BY_SIDE, "error_kinds")]
    rows = []
    for (path, fault), by_label in found.items():
        row: list[Any] = [path, fault]
        for c in labels:
            docs = by_label.get(c, [])
            row += [_median(docs, k) for k in SIDE_BY_SIDE] + [_kinds(docs)]
        rows.append(row)
    return Section("faults-side-by-side", "Faults side by side",
                   lines=["Per fault of the timeline, the median over each column's trials "
                          "(failed share of the fault window, s from its end to the first "
                          "success, s until the control plane was whole again) and the "
                          "failed requests by kind over all trials. The verdict above ranks "
                          "the same figures."],
                   tables=[Table("faults-side-by-side-rows", "Faults side by side", header,
                                 rows)])
