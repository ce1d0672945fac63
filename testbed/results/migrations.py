"""Ordered schema steps from version 1 (schema.DDL) upward; each runs once, in one transaction."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from testbed.results.schema import DDL, SCHEMA_VERSION, append_only
from testbed.results.summary import ResultsError, utc_now

# Version 2: the nightly id of a run, and every run's flattened metrics (analysis.metrics),
# one row per metric and trial, so history reads never parse summary_json.
_V2 = """
ALTER TABLE runs ADD COLUMN nightly_id TEXT;
CREATE INDEX IF NOT EXISTS runs_by_nightly ON runs (nightly_id, started_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_id          TEXT NOT NULL REFERENCES runs (run_id),
    seq             INTEGER NOT NULL,
    series          TEXT NOT NULL,
    cni             TEXT NOT NULL,
    backend         TEXT NOT NULL DEFAULT '',
    nightly_id      TEXT,
    started_at      TEXT NOT NULL,
    key             TEXT NOT NULL,
    unit            TEXT NOT NULL,
    better          TEXT NOT NULL CHECK (better IN ('higher', 'lower')),
    ranked          INTEGER NOT NULL CHECK (ranked IN (0, 1)),
    generator_bound INTEGER NOT NULL CHECK (generator_bound IN (0, 1)),
    trial           INTEGER NOT NULL,
    value           REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, seq);
CREATE INDEX IF NOT EXISTS metrics_by_series ON metrics (series, key, started_at);
"""

METRIC_COLUMNS = ("run_id", "seq", "series", "cni", "backend", "nightly_id", "started_at",
                  "key", "unit", "better", "ranked", "generator_bound", "trial", "value")
INSERT_METRIC = "INSERT INTO metrics ({}) VALUES ({})".format(
    ", ".join(METRIC_COLUMNS), ", ".join("?" * len(METRIC_COLUMNS)))


def series_of(summary: Mapping[str, Any]) -> str:
    """`cni:backend[@version] [scenario]`: the nightly entry a run belongs to (or its CNI)."""
    entry = summary.get("nightly_entry")
    if entry:
        return str(entry)
    scenario = summary.get("scenario")
    if isinstance(scenario, Mapping):
        scenario = scenario.get("name")
    name = f"{summary.get('cni')}:{summary.get('backend') or ''}".rstrip(":")
    return f"{name} [{scenario}]" if scenario else name


def metric_rows(summary: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The summary's flattened metrics as `metrics` rows (one per metric and trial)."""
    from testbed.analysis.metrics import flatten  # scipy: only when a run is stored

    rows: list[tuple[Any, ...]] = []
    base = (summary["run_id"], series_of(summary), summary["cni"], summary.get("backend") or "",
            summary.get("nightly_id"), summary.get("started_at") or utc_now())
    try:
        found = flatten(summary)
    except Exception:  # derived data: an odd section never stops the run being stored
        return rows
    for metric in found.values():
        for trial, value in enumerate(metric.values):
            if not math.isfinite(value):
                continue
            rows.append((base[0], len(rows), *base[1:], metric.key, metric.unit, metric.better,
                         int(metric.ranked), int(metric.generator_bound), trial, value))
    return rows


def _v2(db: sqlite3.Connection) -> None:
    for statement in statements(_V2):
        db.execute(statement)
    # Backfill from the final runs before the triggers exist (they only admit open runs).
    for run_id, doc in db.execute("SELECT run_id, summary_json FROM runs"
                                  " WHERE summary_json IS NOT NULL ORDER BY rowid").fetchall():
        try:
            summary = json.loads(doc)
        except json.JSONDecodeError:
            continue
        db.executemany(INSERT_METRIC, metric_rows({**summary, "run_id": run_id}))
    for statement in statements(append_only("metrics")):
        db.execute(statement)


@dataclass(frozen=True)
class Step:
    """Upgrades a database from `version - 1` to `version`."""

    version: int
    what: str
    apply: Callable[[sqlite3.Connection], None]


STEPS: tuple[Step, ...] = (
    Step(2, "runs.nightly_id and the metrics table (flattened metrics per run)", _v2),
)
assert [s.version for s in STEPS] == list(range(2, SCHEMA_VERSION + 1)), "steps out of order"


def statements(ddl: str) -> list[str]:
    """The statements of a script (a trigger body's ';' does not end its CREATE)."""
    out, buf = [], ""
    for line in ddl.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]


def version_of(db: sqlite3.Connection) -> int | None:
    """The highest applied version, or None for an empty file."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
        return None
    return db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]  # type: ignore[no-any-return]


def migrate(db: sqlite3.Connection, where: object) -> list[int]:
    """Bring the database (inside the caller's transaction) to SCHEMA_VERSION; the versions
    applied. Not executescript(): it would commit on its own, outside the transaction."""
    version = version_of(db)
    if version is not None and version > SCHEMA_VERSION:
        raise ResultsError(f"{where} has schema version {version}, newer than this testbed's "
                           f"{SCHEMA_VERSION}: upgrade testbed or set TESTBED_DB")
    if version is None:  # a new file: version 1, then every step, like any old database
        for statement in statements(DDL):
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (?, ?)", (1, utc_now()))
        version = 1
    applied = []
    for step in STEPS:
        if step.version > version:
            step.apply(db)
            db.execute("INSERT INTO schema_version VALUES (?, ?)", (step.version, utc_now()))
            applied.append(step.version)
    return applied
