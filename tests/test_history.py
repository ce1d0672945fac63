"""The store's history: schema migrations from v1, concurrent writers, `history` read-back."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from testbed.results import Store, history, migrations, schema

# sha256 of schema.DDL as released in version 1 (main at 339d6fd): version 1 never changes.
V1_DDL_SHA256 = "b3b60df98ed213639edd3a92f28d6149fd8abc3b791f869cc411c58a52fd5399"


def summary(run_id: str, rps: float, **extra: Any) -> dict[str, Any]:
    """A small final summary with one HTTP path and one iperf3 figure."""
    return {"run_id": run_id, "cni": "flannel", "backend": "vxlan", "build": "source",
            "started_at": extra.pop("started_at", "2026-11-01T02:00:00Z"), "scenario": "light",
            "paths": [{"path": "pod-to-service", "requests": 1000, "failures": 0, "rps": rps,
                       "p50_ms": 2.0, "p99_ms": 9.0}],
            "throughput": [{"path": "pod-to-pod-cross-node", "protocol": "tcp", "streams": 1,
                            "gbit_s": 9.5}], **extra}


def build_v1(path: Path, runs: int = 2) -> None:
    """A version-1 database exactly as the v1 Store wrote it: schema.DDL, version row 1, runs
    inserted running then finalized (the only update the v1 triggers allow)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(schema.DDL)
    db.execute("INSERT INTO schema_version VALUES (1, '2026-11-01T00:00:00Z')")
    for i in range(runs):
        s = summary(f"v1-run-{i}", 100.0 + i, started_at=f"2026-11-0{i + 1}T02:00:00Z")
        db.execute("INSERT INTO runs (run_id, started_at, recorded_at, cni, backend, status)"
                   " VALUES (?, ?, ?, 'flannel', 'vxlan', 'running')",
                   (s["run_id"], s["started_at"], s["started_at"]))
        db.execute("INSERT INTO path_metrics (run_id, seq, path, rps) VALUES (?, 0, ?, ?)",
                   (s["run_id"], "pod-to-service", s["paths"][0]["rps"]))
        db.execute("UPDATE runs SET status = 'complete', summary_json = ? WHERE run_id = ?",
                   (json.dumps(s), s["run_id"]))
    db.close()


def test_v1_ddl_is_frozen() -> None:
    assert hashlib.sha256(schema.DDL.encode()).hexdigest() == V1_DDL_SHA256


def test_a_v1_database_opens_and_upgrades(tmp_path: Path) -> None:
    db = tmp_path / "v1.sqlite"
    build_v1(db)
    store = Store(db)
    with sqlite3.connect(db) as c:
        versions = [r[0] for r in c.execute("SELECT version FROM schema_version ORDER BY 1")]
        columns = {r[1] for r in c.execute("PRAGMA table_info(runs)")}
        backfilled = c.execute("SELECT run_id, key, value FROM metrics WHERE key ="
                               " 'paths.pod-to-service.rps' ORDER BY run_id").fetchall()
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            c.execute("DELETE FROM metrics")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            c.execute("UPDATE metrics SET value = 0")
    assert versions == [1, 2]
    assert "nightly_id" in columns
    assert backfilled == [("v1-run-0", "paths.pod-to-service.rps", 100.0),
                          ("v1-run-1", "paths.pod-to-service.rps", 101.0)]
    assert store.get("v1-run-1")["paths"][0]["rps"] == 101.0  # type: ignore[index]
    store.add(summary("new-run", 120.0, nightly_id="n1"))  # and it takes new runs
    assert Store(db).get("new-run") is not None  # a second open applies nothing again
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 2
        assert c.execute("SELECT nightly_id FROM runs WHERE run_id = 'new-run'"
                         ).fetchone()[0] == "n1"


def test_a_new_database_matches_an_upgraded_one(tmp_path: Path) -> None:
    build_v1(tmp_path / "old.sqlite", runs=0)
    Store(tmp_path / "old.sqlite")
    Store(tmp_path / "new.sqlite")

    def shape(path: Path) -> list[tuple[str, str]]:
        with sqlite3.connect(path) as c:
            return sorted(c.execute("SELECT type, name FROM sqlite_master").fetchall())

    assert shape(tmp_path / "old.sqlite") == shape(tmp_path / "new.sqlite")
    assert [s.version for s in migrations.STEPS][-1] == schema.SCHEMA_VERSION


def _writer(path: str, who: str, n: int) -> None:
    store = Store(path)
    for i in range(n):
        run_id = f"{who}-{i}"
        store.begin(run_id, {"cni": "flannel", "backend": "vxlan", "nightly_id": who})
        store.record_partial(run_id, "paths", [{"path": "pod-to-service", "rps": float(i)}])
        store.finalize(summary(run_id, float(i), nightly_id=who))


def test_two_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.sqlite")  # a new file: both processes also race to create it
    n = 25
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, who, n)) for who in ("night-a", "night-b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT nightly_id, COUNT(*) FROM runs WHERE status = 'complete'"
                         " GROUP BY 1 ORDER BY 1").fetchall() == [("night-a", n), ("night-b", n)]
        assert c.execute("SELECT COUNT(*) FROM partial_records").fetchone()[0] == 2 * n
        assert c.execute("SELECT COUNT(DISTINCT run_id) FROM metrics").fetchone()[0] == 2 * n
        assert c.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 2


def test_odd_figures_never_stop_a_run_being_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "odd.sqlite")
    s = summary("odd", float("nan"))
    s["latency"] = {"trials": "not a list of trials"}
    store.add(s)
    assert store.get("odd") is not None
    keys = {p.key for p in history.points(store)}
    assert "paths.pod-to-service.rps" not in keys and "paths.pod-to-service.p99_ms" in keys


def _stored(tmp_path: Path) -> Store:
    store = Store(tmp_path / "h.sqlite")
    for night in range(3):
        store.add(summary(f"r{night}", 100.0 + night, nightly_id=f"n{night}",
                          nightly_entry="flannel:vxlan [light]",
                          started_at=f"2026-11-0{night + 1}T02:00:00Z"))
    store.add(summary("adhoc", 50.0, started_at="2026-11-05T02:00:00Z"))
    return store


def test_history_points_filter_by_cni_metric_and_time(tmp_path: Path) -> None:
    store = _stored(tmp_path)
    rps = history.points(store, metrics=["paths.*.rps"])
    assert [(p.run_id, p.value, p.series) for p in rps] == [
        ("r0", 100.0, "flannel:vxlan [light]"), ("r1", 101.0, "flannel:vxlan [light]"),
        ("r2", 102.0, "flannel:vxlan [light]"), ("adhoc", 50.0, "flannel:vxlan [light]")]
    assert {p.better for p in rps} == {"higher"}
    assert [p.run_id for p in history.points(store, metrics=["paths.*.rps"],
                                             since="2026-11-03")] == ["r2", "adhoc"]
    assert len({p.run_id for p in history.points(store, nightly_only=True)}) == 3
    assert history.points(store, cnis=["calico"]) == []
    assert len(history.points(store, cnis=["flannel:vxlan"], metrics=["*gbit_s"])) == 4
    nights = history.nights(store)
    assert [n.nightly_id for n in nights] == ["n0", "n1", "n2"]
    assert nights[-1].runs[0].status == "complete"


def test_history_cli_table_json_and_csv(tmp_path: Path) -> None:
    store = _stored(tmp_path)
    out = tmp_path / "h.csv"
    res = run_cli("history", "--db", str(store.path), "--metric", "paths.*.rps", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [p["value"] for p in doc["points"]] == [100.0, 101.0, 102.0, 50.0]
    res = run_cli("history", "--db", str(store.path), "--cni", "flannel", "--export", str(out))
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert {r["key"] for r in rows} >= {"paths.pod-to-service.rps",
                                        "throughput.pod-to-pod-cross-node.tcpx1.gbit_s"}
    res = run_cli("history", "--db", str(store.path), "--since", "yesterday-ish")
    assert res.returncode == 2 and "--since" in res.stderr and "\n" not in res.stderr.strip()
    res = run_cli("history", "--db", str(store.path), "--metric", "paths.*.rps")
    assert res.returncode == 0 and "pod-to-service" in res.stdout
    assert "flannel:vxlan [light]" in res.stdout  # a series label is text, never markup
