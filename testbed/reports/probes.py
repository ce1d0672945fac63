"""One run's report: RR/CRR round trips in microseconds and the CPU cost per unit of work."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from testbed.reports.model import Cell, Chart, Section, Series, Table, fnum, num

RR_COLUMNS = ("path", "kind", "tool", "trial", "rate_per_s", "p50_us", "p90_us", "p99_us",
              "p999_us")
COST_COLUMNS = ("path", "work", "trial", "amount", "seconds", "cni_cpu_s", "node_cpu_s")


def _rows(s: Mapping[str, Any], section: str) -> list[dict[str, Any]]:
    doc = s.get(section) or {}
    return [dict(r) for r in doc.get("rows", [])] if isinstance(doc, Mapping) else []


def _median_by(rows: list[dict[str, Any]], cats: list[str], key: str, where: Any
               ) -> list[float | None]:
    out: list[float | None] = []
    for c in cats:
        vals = [float(r[key]) for r in rows if r.get("path") == c and where(r)
                and r.get(key) is not None]
        out.append(fnum(statistics.median(vals)) if vals else None)
    return out


def latency(s: Mapping[str, Any], pre: str) -> Section | None:
    """p50 and p99 per path for RR and CRR (medians over the trials), and every row."""
    rows = _rows(s, "latency")
    if not rows:
        return None
    cats = list(dict.fromkeys(str(r["path"]) for r in rows))
    charts = [Chart(f"{pre}rr-{kind}", "bar", f"{title}: round trip per path", "µs", "path",
                    cats, [Series(word, _median_by(rows, cats, key,
                                                   lambda r, k=kind: r.get("kind") == k))
                           for word, key in (("p50", "p50_us"), ("p99", "p99_us"))])
              for kind, title in (("rr", "RR (sockperf ping-pong)"),
                                  ("crr", "CRR (a new connection per request, wrk)"))]
    body: list[list[Cell]] = [[num(r.get(c)) for c in RR_COLUMNS] for r in rows]
    return Section(f"{pre}rr", "Round trips in microseconds (RR, CRR)", charts=charts,
                   lines=["Loopback and node-to-node have no CNI on the path: they are the "
                          "floors the pod paths are read against."],
                   tables=[Table(f"{pre}rr-rows", "RR and CRR", list(RR_COLUMNS), body,
                                 collapsed=len(body) > 12)])


def cost(s: Mapping[str, Any], pre: str) -> Section | None:
    """CPU-seconds of the CNI daemons and the nodes per Gbit and per 1000 requests."""
    rows = _rows(s, "cost")
    if not rows:
        return None
    charts = []
    for work, unit, title in (("gbit", "per_gbit", "CPU-seconds per Gbit moved (iperf3)"),
                              ("requests", "per_1000_requests",
                               "CPU-seconds per 1000 requests (Locust)")):
        mine = [r for r in rows if r.get("work") == work]
        cats = list(dict.fromkeys(str(r["path"]) for r in mine))
        if cats:
            charts.append(Chart(f"{pre}cost-{work}", "bar", title, "CPU-s", "path", cats, [
                Series(role, _median_by(mine, cats, f"{role}_cpu_s_{unit}", lambda r: True))
                for role in ("cni", "node")]))
    columns = [*COST_COLUMNS, "cni_cpu_s_per_unit", "node_cpu_s_per_unit"]
    body: list[list[Cell]] = []
    for r in rows:
        unit = "per_gbit" if r.get("work") == "gbit" else "per_1000_requests"
        body.append([num(r.get(c)) for c in COST_COLUMNS]
                    + [num(r.get(f"cni_cpu_s_{unit}")), num(r.get(f"node_cpu_s_{unit}"))])
    return Section(f"{pre}cost", "Cost: CPU per unit of work", charts=charts,
                   lines=["From the cgroup CPU counters of every node and CNI container, read "
                          "before and after each phase. The node's share includes the pods' "
                          "own work (the generator and the server run in pods)."],
                   tables=[Table(f"{pre}cost-rows", "Cost", columns, body,
                                 collapsed=len(body) > 12)])
