"""The SQLite database of all runs: append-only, one row per run plus its measurements."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from testbed import paths
from testbed.results import migrations
from testbed.results.models import baseline_kind
from testbed.results.schema import (
    BOOKKEEPING,
    BOOL_COLUMNS,
    COLUMNS,
    INSERT_ROWS,
    SELECT_ROWS,
    TABLES,
)
from testbed.results.summary import (
    ROW_SECTIONS,
    ResultsError,
    Row,
    Summary,
    as_rows,
    check_section,
    fold,
    normalize,
    status_of,
    utc_now,
)

ENV_DB = "TESTBED_DB"


def default_path() -> Path:
    """$TESTBED_DB, else results.sqlite in the per-user data directory."""
    env = os.environ.get(ENV_DB)
    return Path(env).expanduser() if env else paths.data_dir() / "results.sqlite"


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


class Store:
    """All runs in one SQLite file; see SCHEMA.md for the tables and the append-only rules."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._tx() as db:
                self._migrate(db)
        except (OSError, sqlite3.Error) as e:
            raise ResultsError(f"cannot open the results database {self.path}: {e}") from e

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # One short transaction per call: several processes may share the file.
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _migrate(self, db: sqlite3.Connection) -> None:
        # In this BEGIN IMMEDIATE transaction: a second process opening the file waits, then
        # finds it upgraded already.
        migrations.migrate(db, self.path)

    # --- writing -------------------------------------------------------------------------

    def begin(self, run_id: str, meta: Mapping[str, Any], run_dir: str | Path | None = None,
              ) -> None:
        """Open a run (status running); it is an error if run_id was ever recorded."""
        with self._tx() as db:
            self._insert_run(db, {**meta, "run_id": run_id}, run_dir)

    def record_partial(self, run_id: str, section: str, rows: Any) -> None:
        """Log measured data of a running run as it arrives (kept even if the run never ends)."""
        check_section(section)
        payload = json.dumps(as_rows(rows), sort_keys=True, default=str)
        try:
            with self._tx() as db:
                seq = db.execute("SELECT COUNT(*) FROM partial_records WHERE run_id = ?",
                                 (run_id,)).fetchone()[0]
                db.execute("INSERT INTO partial_records VALUES (?, ?, ?, ?, ?)",
                           (run_id, seq, section, payload, utc_now()))
        except sqlite3.IntegrityError as e:
            raise ResultsError(f"cannot record {section} for run {run_id}: {e}") from e

    def finalize(self, summary: Mapping[str, Any], run_dir: str | Path | None = None) -> None:
        """Store the final summary: its rows, and the run's one running -> final transition."""
        final = normalize(summary)
        if run_dir and not final.get("run_dir"):
            final["run_dir"] = str(Path(run_dir).absolute())
        run_id = final["run_id"]
        try:
            with self._tx() as db:
                row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                if row is None:
                    self._insert_run(db, final, run_dir)
                elif row["status"] != "running":
                    raise ResultsError(f"run {run_id} is already stored as {row['status']}: "
                                       "results are append-only")
                for section, table in TABLES.items():
                    self._insert_rows(db, table, run_id, final.get(section) or [])
                opened = db.execute("SELECT started_at, nightly_id FROM runs WHERE run_id = ?",
                                    (run_id,)).fetchone()
                db.executemany(migrations.INSERT_METRIC, migrations.metric_rows(
                    {**final, "started_at": opened["started_at"],
                     "nightly_id": opened["nightly_id"] or final.get("nightly_id")}))
                db.execute(
                    "UPDATE runs SET finished_at = ?, build = ?, scenario = ?, scenario_hash = ?,"
                    " seed = ?, users = ?, spawn_rate = ?, duration_s = ?, interrupted = ?,"
                    " status = ?, run_dir = COALESCE(?, run_dir), summary_json = ?"
                    " WHERE run_id = ?",
                    (final.get("finished_at") or utc_now(), final["build"], *_scenario(final),
                     _int(final.get("seed")), _int(final.get("users")),
                     _float(final.get("spawn_rate")), _float(final.get("duration_s")),
                     int(final["interrupted"]), status_of(final), final.get("run_dir"),
                     json.dumps(final, sort_keys=True, default=str), run_id))
        except sqlite3.Error as e:
            raise ResultsError(f"cannot store run {run_id} in {self.path}: {e}") from e

    def add(self, summary: Mapping[str, Any], run_dir: str | Path | None = None) -> None:
        """Store a whole finished run at once; an existing run_id is an error."""
        run_id = summary.get("run_id")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise ResultsError(f"run {run_id} is already stored: results are append-only")
        self.finalize(summary, run_dir)

    def interrupt(self, run_id: str) -> Summary:
        """Close a run that never finished (its process died): final = what it recorded."""
        summary = self.get(run_id)
        if summary is None:
            raise ResultsError(f"no run {run_id} in {self.path}")
        if summary.get("status") != "running":
            raise ResultsError(f"run {run_id} is already {summary.get('status')}")
        summary.update(interrupted=True, status="interrupted")
        self.finalize(summary)
        return normalize(summary)

    def interrupt_stale(self) -> list[str]:
        """Mark interrupted every run on this host still `running` whose process is gone."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ?",
                              (socket.gethostname(),)).fetchall()
        stale = [r["run_id"] for r in rows if not _alive(r["pid"])]
        for run_id in stale:
            self.interrupt(run_id)
        return stale

    def _insert_run(self, db: sqlite3.Connection, meta: Mapping[str, Any],
                    run_dir: str | Path | None) -> None:
        run_id = meta.get("run_id")
        if not run_id or not meta.get("cni"):
            raise ResultsError("a run needs at least run_id and cni")
        try:
            db.execute(
                "INSERT INTO runs (run_id, started_at, recorded_at, cni, backend, build, scenario,"
                " scenario_hash, seed, users, spawn_rate, status, run_dir, host, pid, nightly_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (run_id, meta.get("started_at") or utc_now(), utc_now(), meta["cni"],
                 meta.get("backend") or "", meta.get("build") or "unknown", *_scenario(meta),
                 _int(meta.get("seed")), _int(meta.get("users")), _float(meta.get("spawn_rate")),
                 str(Path(run_dir).absolute()) if run_dir else None, socket.gethostname(),
                 os.getpid(), meta.get("nightly_id")))
        except sqlite3.IntegrityError as e:
            raise ResultsError(f"run {run_id} is already stored: results are append-only") from e

    @staticmethod
    def _insert_rows(db: sqlite3.Connection, table: str, run_id: str,
                     rows: Iterable[Mapping[str, Any]]) -> None:
        columns = list(COLUMNS[table])
        sql = INSERT_ROWS[table]
        for seq, row in enumerate(rows):
            values = [int(row[c]) if c in BOOL_COLUMNS and row.get(c) is not None
                      else row.get(c) for c in columns]
            if table == "baselines":
                values[columns.index("kind")] = row.get("kind") or baseline_kind(row)
            extra = {k: v for k, v in row.items() if k not in columns}
            db.execute(sql, (run_id, seq, *values,
                             json.dumps(extra, sort_keys=True, default=str) if extra else None))

    # --- reading -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def reader(self) -> sqlite3.Connection:
        """A read connection (rows by name) for queries such as results.history's."""
        return self._connect()

    def get(self, run_id: str) -> Summary | None:
        """The run's summary: the final one, or for a running run what it has recorded so far."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            if row["summary_json"]:
                return dict(json.loads(row["summary_json"]))
            records = db.execute("SELECT section, rows_json FROM partial_records"
                                 " WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        base = {k: row[k] for k in ("run_id", "started_at", "cni", "backend", "build", "seed",
                                    "users", "spawn_rate", "run_dir") if row[k] is not None}
        partial = fold((r["section"], json.loads(r["rows_json"])) for r in records)
        return {**base, **partial, "run_id": run_id, "status": "running",
                "interrupted": bool(partial.get("interrupted", False))}

    def rows(self, section: str, run_id: str) -> list[Row]:
        """A run's stored rows of one section, as summary-shaped dicts (NULL columns omitted)."""
        if section not in ROW_SECTIONS:
            raise ResultsError(f"{section!r} is not a row section: one of {', '.join(TABLES)}")
        table = TABLES[section]
        with closing(self._connect()) as db:
            found = db.execute(SELECT_ROWS[table], (run_id,)).fetchall()
        out = []
        for found_row in found:
            r = dict(found_row)
            row: Row = {k: (bool(v) if k in BOOL_COLUMNS else v)
                        for k, v in r.items() if k not in BOOKKEEPING and v is not None}
            out.append({**row, **json.loads(r["extra_json"] or "{}")})
        return out

    def _select(self, cnis: list[str] | None, limit: int | None = None) -> list[Summary]:
        # Newest first; `cnis` None means every run. A negative limit, as SQLite's, means none.
        with closing(self._connect()) as db:
            found = db.execute("SELECT run_id, cni, backend FROM runs"
                               " ORDER BY started_at DESC, rowid DESC").fetchall()
        ids = [r["run_id"] for r in found
               if cnis is None or any(_is_cni(spec, r["cni"], r["backend"]) for spec in cnis)]
        if limit is not None and limit >= 0:
            ids = ids[:limit]
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def last(self, n: int, cni: str | None = None) -> list[Summary]:
        """The n most recent runs, newest first; `cni` is a name or name:backend."""
        return self._select(None if cni is None else [cni], n)

    def all_for(self, cnis: Iterable[str]) -> list[Summary]:
        """Every run of the given CNIs (each a name or name:backend), newest first."""
        return self._select(list(cnis))


def _is_cni(spec: str, cni: str, backend: str) -> bool:
    name, _, want = spec.partition(":")
    return name == cni and (not want or want == backend)


def _scenario(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    env = meta.get("environment") or {}
    scenario = meta.get("scenario")
    if isinstance(scenario, Mapping):
        scenario = scenario.get("name")
    return scenario, meta.get("scenario_hash") or env.get("scenario_hash")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
