"""The results database schema (see SCHEMA.md) and the triggers that keep it append-only.

`DDL` is version 1 exactly as first released: it never changes. Later versions are ordered
steps in migrations.py, applied to new and old databases alike."""

from __future__ import annotations

SCHEMA_VERSION = 2  # DDL (version 1) + every step of migrations.STEPS

# summary section -> table. Every metric table has run_id, seq and extra_json; the other
# columns are the summary row keys of the same name. Metric tables hold a run's final rows;
# while it runs, what it measures is logged to partial_records (append-only, never dropped).
TABLES = {
    "paths": "path_metrics",
    "throughput": "throughput",
    "resources": "resources",
    "baselines": "baselines",
    "timeseries": "timeseries",
}
BOOL_COLUMNS = frozenset({"generator_bound"})
BOOKKEEPING = ("run_id", "seq", "extra_json")

_RUNS = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    recorded_at   TEXT NOT NULL,
    cni           TEXT NOT NULL,
    backend       TEXT NOT NULL DEFAULT '',
    build         TEXT NOT NULL DEFAULT 'unknown',
    scenario      TEXT,
    scenario_hash TEXT,
    seed          INTEGER,
    users         INTEGER,
    spawn_rate    REAL,
    duration_s    REAL,
    interrupted   INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    status        TEXT NOT NULL
                  CHECK (status IN ('running', 'complete', 'interrupted', 'failed')),
    run_dir       TEXT,
    host          TEXT,
    pid           INTEGER,
    summary_json  TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_cni ON runs (cni, backend, started_at);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at);
CREATE TRIGGER IF NOT EXISTS runs_no_delete BEFORE DELETE ON runs
BEGIN SELECT RAISE(ABORT, 'results are append-only: a run cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS runs_final_once BEFORE UPDATE ON runs
WHEN OLD.status <> 'running'
BEGIN SELECT RAISE(ABORT, 'results are append-only: this run is already final'); END;
CREATE TRIGGER IF NOT EXISTS runs_keep_identity BEFORE UPDATE ON runs
WHEN NEW.run_id IS NOT OLD.run_id OR NEW.started_at IS NOT OLD.started_at
  OR NEW.cni IS NOT OLD.cni OR NEW.backend IS NOT OLD.backend
  OR NEW.status = 'running'
BEGIN SELECT RAISE(ABORT, 'results are append-only: only running -> final is allowed'); END;
"""

# The Locust figures both the paths under test and the HTTP ceilings carry.
_HTTP_COLUMNS = """
    requests        INTEGER,
    failures        INTEGER,
    rps             REAL,
    p50_ms          REAL,
    p90_ms          REAL,
    p95_ms          REAL,
    p99_ms          REAL,
    max_ms          REAL,
    generator_bound INTEGER,"""

_METRIC_COLUMNS = {
    "path_metrics": """
    path            TEXT NOT NULL,""" + _HTTP_COLUMNS + """
    mtu             INTEGER""",
    "throughput": """
    path            TEXT NOT NULL,
    protocol        TEXT,
    streams         INTEGER,
    gbit_s          REAL,
    mtu             INTEGER""",
    "resources": """
    container       TEXT NOT NULL,
    phase           TEXT,
    cpu_pct         REAL,
    mem_mib         REAL""",
    "baselines": """
    path            TEXT NOT NULL,
    kind            TEXT NOT NULL,""" + _HTTP_COLUMNS + """
    protocol        TEXT,
    streams         INTEGER,
    gbit_s          REAL""",
    "timeseries": """
    path            TEXT NOT NULL,
    t               REAL NOT NULL,
    rps             REAL,
    p50_ms          REAL,
    p95_ms          REAL,
    failures_per_s  REAL,
    users           INTEGER""",
}


def _metric_table(table: str, columns: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    run_id     TEXT NOT NULL REFERENCES runs (run_id),
    seq        INTEGER NOT NULL,{columns},
    extra_json TEXT
);
CREATE INDEX IF NOT EXISTS {table}_by_run ON {table} (run_id, seq);
{append_only(table)}"""


def append_only(table: str) -> str:
    """Triggers: a table's rows are never updated or deleted, and only added to open runs."""
    # Rows are only ever added, and only while their run is still open.
    return f"""
CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, 'results are append-only: rows are never updated'); END;
CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, 'results are append-only: rows are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS {table}_only_open_runs BEFORE INSERT ON {table}
WHEN (SELECT status FROM runs WHERE run_id = NEW.run_id) IS NOT 'running'
BEGIN SELECT RAISE(ABORT, 'results are append-only: the run is already final or unknown'); END;
"""


_PARTIAL = """
CREATE TABLE IF NOT EXISTS partial_records (
    run_id      TEXT NOT NULL REFERENCES runs (run_id),
    seq         INTEGER NOT NULL,
    section     TEXT NOT NULL,
    rows_json   TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS partial_records_by_run ON partial_records (run_id, seq);
""" + append_only("partial_records")

DDL = _RUNS + _PARTIAL + "".join(_metric_table(t, c) for t, c in _METRIC_COLUMNS.items())

# Each metric table's value columns, and its two statements. The identifiers come only from
# the fixed tables above; every value is a `?` parameter.
COLUMNS = {table: tuple(line.split()[0] for line in block.strip().splitlines())
           for table, block in _METRIC_COLUMNS.items()}
INSERT_ROWS = {table: "INSERT INTO {} (run_id, seq, {}, extra_json) VALUES ({})".format(
                   table, ", ".join(cols), ", ".join("?" * (len(cols) + 3)))
               for table, cols in COLUMNS.items()}
SELECT_ROWS = {table: f"SELECT * FROM {table} WHERE run_id = ? ORDER BY seq" for table in COLUMNS}

