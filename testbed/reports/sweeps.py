"""The report's sweep section: p99 versus offered load per path, the knees, every point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed.reports.model import GENERATOR_BOUND, Chart, Section, Series, Table, num

POINT_COLUMNS = ("path", "offered_rps", "sent_rps", "achieved_rps", "p50_ms", "p90_ms",
                 "p99_ms", "p999_ms", "error_share", "errors", "generator_cpu_max",
                 "generator_bound")
KNEE_COLUMNS = ("path", "knee_rps", "p99_objective_ms", "ceiling_rps", "generator_ceiling_rps",
                "generator", "step_s")


def _errors(kinds: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(dict(kinds or {}).items())) or "-"


def sections(s: Mapping[str, Any], pre: str = "") -> list[Section]:
    """Nothing when the run had no sweep; else one chart (log p99 over offered rps, ranked
    points only, the objective as a dashed reference) and the knee and point tables."""
    sweeps: Mapping[str, Any] = s.get("sweeps") or {}
    if not sweeps:
        return []
    series, bound, objective = [], [], 0.0
    for path, row in sweeps.items():
        pts = [p for p in row.get("points") or [] if p.get("p99_ms")]
        series.append(Series(path, points=[(float(p["offered_rps"]), float(p["p99_ms"]))
                                           for p in pts if not p.get("generator_bound")]))
        bound += [f"{path} {p['offered_rps']:g}" for p in pts if p.get("generator_bound")]
        objective = max(objective, float(row.get("p99_objective_ms") or 0.0))
    top = max((x for ser in series for x, _ in ser.points), default=0.0)
    if objective and top:
        series.append(Series(f"p99 objective {objective:g} ms",
                             points=[(0.0, objective), (top, objective)]))
    note = (f"⚠ left out, {GENERATOR_BOUND}: {', '.join(bound)} rps" if bound else "")
    chart = Chart(f"{pre}sweep", "line", "p99 latency versus offered load (vegeta, open loop)",
                  "p99 (ms, log scale)", "offered requests/s", series=series, note=note,
                  log_y=True)
    knees = Table(f"{pre}knees", "Knee per path: the highest offered rate held (achieved "
                  "within 5%) under the p99 objective; ceilings measured in the same run",
                  list(KNEE_COLUMNS),
                  [[path, *(num(row.get(k)) for k in KNEE_COLUMNS[1:])]
                   for path, row in sweeps.items()])
    points = Table(f"{pre}sweep-points", "Sweep points", list(POINT_COLUMNS),
                   [[path, *(_errors(p.get(k)) if k == "errors" else num(p.get(k))
                             for k in POINT_COLUMNS[1:])]
                    for path, row in sweeps.items() for p in row.get("points") or []])
    sec = Section(f"{pre}sweep", "Latency versus offered load (sweep)", charts=[chart],
                  tables=[knees, points])
    sec.lines.append("vegeta keeps a constant rate whatever the answers take (open loop: no "
                     "coordinated omission); a path's ceiling is vegeta as fast as "
                     "its workers go, the generator's ceiling the same against loopback.")
    return [sec]
