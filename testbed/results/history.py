"""Reading the store back as history: flattened metric points, and nights with their runs."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from testbed.results.migrations import series_of
from testbed.results.store import Store


@dataclass(frozen=True)
class Point:
    """One metric of one complete run (the median over its trials)."""

    started_at: str
    nightly_id: str | None
    run_id: str
    series: str
    cni: str
    backend: str
    key: str
    unit: str
    better: str
    ranked: bool
    generator_bound: bool
    value: float
    trials: int


@dataclass
class NightRun:
    """One run of a night, as stored."""

    run_id: str
    series: str
    cni: str
    backend: str
    status: str
    started_at: str
    error: str = ""
    release: str = ""
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass
class Night:
    """Every run stored under one nightly id."""

    nightly_id: str
    started_at: str
    runs: list[NightRun] = field(default_factory=list)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _cni_match(spec: str, cni: str, backend: str, series: str) -> bool:
    name, _, want = spec.partition(":")
    if name == cni and (not want or want == backend):
        return True
    return series == spec or series.startswith(f"{spec} ")


def points(store: Store, *, cnis: Sequence[str] = (), metrics: Sequence[str] = (),
           since: str | None = None, nightly_only: bool = False) -> list[Point]:
    """Complete runs' metrics, oldest first; `metrics` are names or globs (`paths.*.rps`),
    `cnis` NAME, NAME:BACKEND or a series label, `since` a UTC timestamp prefix."""
    sql = ("SELECT m.*, r.status FROM metrics m JOIN runs r ON r.run_id = m.run_id"
           " WHERE r.status = 'complete'")
    params: list[Any] = []
    if since:
        sql += " AND m.started_at >= ?"
        params.append(since)
    if nightly_only:
        sql += " AND m.nightly_id IS NOT NULL"
    sql += " ORDER BY m.started_at, m.run_id, m.seq"
    with closing(store.reader()) as db:
        rows = db.execute(sql, params).fetchall()
    grouped: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        if cnis and not any(_cni_match(c, r["cni"], r["backend"], r["series"]) for c in cnis):
            continue
        if metrics and not any(fnmatch.fnmatchcase(r["key"], m) for m in metrics):
            continue
        grouped.setdefault((r["run_id"], r["key"]), []).append(r)
    out = []
    for group in grouped.values():
        r = group[0]
        out.append(Point(r["started_at"], r["nightly_id"], r["run_id"], r["series"], r["cni"],
                         r["backend"], r["key"], r["unit"], r["better"],
                         all(g["ranked"] for g in group),
                         any(g["generator_bound"] for g in group),
                         _median([g["value"] for g in group]), len(group)))
    return out


def nights(store: Store, limit: int | None = None) -> list[Night]:
    """The last `limit` nights (all if None), oldest first, each with its runs."""
    with closing(store.reader()) as db:
        found = db.execute("SELECT nightly_id, MIN(started_at) AS started FROM runs"
                           " WHERE nightly_id IS NOT NULL GROUP BY nightly_id"
                           " ORDER BY started DESC, nightly_id DESC").fetchall()
        chosen = found if limit is None else found[:limit]
        out = []
        for n in reversed(chosen):
            night = Night(n["nightly_id"], n["started"])
            for r in db.execute("SELECT run_id, cni, backend, status, started_at, summary_json"
                                " FROM runs WHERE nightly_id = ? ORDER BY started_at, rowid",
                                (n["nightly_id"],)).fetchall():
                summary = json.loads(r["summary_json"]) if r["summary_json"] else {}
                night.runs.append(NightRun(
                    r["run_id"], series_of({**summary, "cni": r["cni"],
                                            "backend": r["backend"]}),
                    r["cni"], r["backend"], r["status"], r["started_at"],
                    str(summary.get("error") or ""), str(summary.get("release") or ""),
                    dict(summary.get("environment") or {})))
            out.append(night)
    return out
