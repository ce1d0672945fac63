"""Run directories and the results store: round trip, append-only, crash safety (no Docker)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import random
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from testbed import cni as cnis
from testbed.paths import REPO_ROOT
from testbed.results import ResultsError, RunDir, Store, default_path

# --- a synthetic run, computed the way the load runner computes one --------------------------
# Samples are (t seconds, response ms, ok). They go through a Locust-shaped stats CSV (the
# columns of locust's *_stats.csv) and are read back from it, as the runner reads Locust's.

LOCUST_HEADER = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                 "Average Response Time", "Min Response Time", "Max Response Time",
                 "Average Content Size", "Requests/s", "Failures/s", "50%", "66%", "75%", "80%",
                 "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
PCTS = (50, 66, 75, 80, 90, 95, 98, 99, 99.9, 99.99, 100)
PATHS = ("pod-to-service", "pod-to-nodeport", "outside-to-ingress")
BASELINES = ("container-to-container", "node-to-node")

Sample = tuple[float, float, bool]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def samples_for(rng: random.Random, median_ms: float, rps: float, duration: float,
                fail_rate: float) -> list[Sample]:
    """Arrivals at about `rps` over `duration`, lognormal response times around `median_ms`."""
    out, t = [], 0.0
    while t < duration:
        out.append((t, rng.lognormvariate(math.log(median_ms), 0.45), rng.random() >= fail_rate))
        t += rng.expovariate(rps)
    return out


def locust_stats_csv(samples: dict[str, list[Sample]], duration: float) -> str:
    """A Locust `*_stats.csv` for the samples (one GET row per path, plus Aggregated)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(LOCUST_HEADER)
    everything: list[Sample] = []
    for name, rows in [*samples.items(), ("Aggregated", everything)]:
        if name != "Aggregated":
            everything.extend(rows)
        ms = [r[1] for r in rows]
        fails = sum(not ok for _, _, ok in rows)
        writer.writerow(["GET" if name != "Aggregated" else "", name, len(rows), fails,
                         percentile(ms, 50), sum(ms) / len(ms), min(ms), max(ms), 120,
                         len(rows) / duration, fails / duration,
                         *(percentile(ms, p) for p in PCTS)])
    return buf.getvalue()


def paths_from_stats(stats_csv: str, bound: set[str]) -> list[dict[str, Any]]:
    """summary `paths[]` rows read back from a Locust stats CSV."""
    return [{"path": r["Name"], "requests": int(r["Request Count"]),
             "failures": int(r["Failure Count"]), "rps": float(r["Requests/s"]),
             "p50_ms": float(r["50%"]), "p90_ms": float(r["90%"]), "p95_ms": float(r["95%"]),
             "p99_ms": float(r["99%"]), "max_ms": float(r["100%"]),
             "generator_bound": r["Name"] in bound}
            for r in csv.DictReader(io.StringIO(stats_csv)) if r["Name"] != "Aggregated"]


def timeseries_from(samples: dict[str, list[Sample]], users: int) -> list[dict[str, Any]]:
    """One row per path and whole second, like Locust's stats history."""
    out = []
    for name, rows in samples.items():
        by_second: dict[int, list[Sample]] = defaultdict(list)
        for s in rows:
            by_second[int(s[0])].append(s)
        for sec in sorted(by_second):
            ms = [r[1] for r in by_second[sec]]
            out.append({"path": name, "t": float(sec + 1), "rps": float(len(ms)),
                        "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
                        "failures_per_s": float(sum(not ok for *_, ok in by_second[sec])),
                        "users": users})
    return out


def iperf_gbit(rng: random.Random, gbit: float, seconds: int = 5) -> float:
    """Gbit/s from per-second byte counts, the way iperf3's JSON sums intervals."""
    sent = [gbit * 1e9 / 8 * rng.uniform(0.93, 1.07) for _ in range(seconds)]
    return round(sum(sent) * 8 / seconds / 1e9, 3)


def cgroup_usage(rng: random.Random, cores: float, mib: float, wall_s: float = 10.0,
                 ) -> tuple[float, float]:
    """(cpu_pct, mem_mib) from cgroup v2 counters: usage_usec delta and memory.current."""
    usage_usec = cores * wall_s * 1e6 * rng.uniform(0.9, 1.1)
    memory_current = int(mib * 2**20 * rng.uniform(0.95, 1.05))
    return round(usage_usec / (wall_s * 1e6) * 100, 2), round(memory_current / 2**20, 2)


GO = "go1.22.5"
ADAPTATIONS = re.compile(r'^LABEL io\.testbed\.adaptations="([^"]*)"$', re.M)


def source_build(cni: str, release: str) -> tuple[dict[str, str], dict[str, Any]]:
    """A source build's images per role and its `environment.sources`, shaped like the
    pipeline's `_sources` (role -> Go build name -> the image's provenance label, plus the
    image's adaptations label), from the CNI module's own source images at `release`."""
    module = cnis.REGISTRY[cni]
    images: dict[str, str] = {}
    sources: dict[str, Any] = {}
    for role, spec in module.source_images(release, module.module).items():
        images[role] = f"{spec.repository}:{hashlib.sha256(spec.name.encode()).hexdigest()[:12]}"
        sources[role] = {go.name: {"module": go.module, "version": go.version,
                                   "release": go.release, "go": GO,
                                   "sum": "h1:" + base64.b64encode(
                                       hashlib.sha256(go.ref.encode()).digest()).decode(),
                                   "vcs_revision": go.revision}
                         for go in spec.go}
        label = ADAPTATIONS.search((REPO_ROOT / "images" / spec.folder / "Dockerfile").read_text())
        if label:  # the image's io.testbed.adaptations label, as _sources records it
            sources[role]["adaptations"] = label[1]
    return images, sources


def synthetic_summary(cni: str = "flannel", backend: str = "vxlan", build: str = "source",
                      seed: int = 1, slowdown: float = 1.0, duration: float = 20.0,
                      bound: tuple[str, ...] = ("outside-to-ingress",),
                      run_id: str | None = None) -> dict[str, Any]:
    """A realistic run summary computed from synthetic samples; `slowdown` scales latency."""
    rng = random.Random(f"{cni}-{backend}-{seed}")
    users = 20
    samples = {p: samples_for(rng, 2.0 * slowdown * (1 + i * 0.3), 60 / slowdown, duration, 0.01)
               for i, p in enumerate(PATHS)}
    base = {p: samples_for(rng, 0.4 * (1 + i), 150, duration, 0.0)
            for i, p in enumerate(BASELINES)}
    paths = paths_from_stats(locust_stats_csv(samples, duration), set(bound))
    baselines = [{**row, "kind": "http"}
                 for row in paths_from_stats(locust_stats_csv(base, duration), set())]
    baselines.append({"path": "node-to-node", "kind": "throughput", "protocol": "tcp",
                      "streams": 1, "gbit_s": iperf_gbit(rng, 26.7)})
    throughput = [{"path": p, "protocol": proto, "streams": streams,
                   "gbit_s": iperf_gbit(rng, gbit / slowdown)}
                  for p in ("pod-to-pod-cross-node", "pod-to-service")
                  for proto, streams, gbit in (("tcp", 1, 16.5), ("tcp", 4, 21.0),
                                               ("udp", 1, 1.0))]
    resources = []
    for container, role in ((f"{cni}-node-1", "node"), (f"{cni}-node-1-{cni}d", "cni")):
        for phase, load in (("idle", 0.02), ("load", 0.6)):
            cpu, mem = cgroup_usage(rng, load * slowdown, 80 if role == "cni" else 300)
            resources.append({"container": container, "phase": phase, "cpu_pct": cpu,
                              "mem_mib": mem, "role": role})
    rid = run_id or "-".join(
        p for p in (f"20261126T1015{seed:02d}Z", cni, backend, f"{rng.getrandbits(24):06x}") if p)
    module = cnis.REGISTRY[cni]
    release = module.default_release
    env: dict[str, Any] = {"kernel": "6.1.0-28-amd64", "docker_version": "26.1.5",
                           "scenario_hash": "sha256:" + "ab" * 32, "release": release,
                           "module": module.module,
                           "packages": {"bird": "1.6.8-10", "iptables": "1.8.9-2"}}
    if build == "source":
        images, env["sources"] = source_build(cni, release)
    else:
        images = module.upstream_images(release)
    env["image_digests"] = {role: "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
                            for role, ref in images.items()}
    return {
        "run_id": rid, "cni": cni, "backend": backend, "build": build, "images": images,
        "release": release, "module": module.module,
        "duration_s": duration, "interrupted": False, "paths": paths,
        "throughput": throughput, "resources": resources, "report": "",
        "environment": env, "started_at": "2026-11-26T10:15:00Z",
        "finished_at": "2026-11-26T10:16:00Z", "seed": seed, "users": users, "spawn_rate": 5.0,
        "scenario": "default", "baselines": baselines,
        "timeseries": timeseries_from(samples, users),
        "mtu": {"pod-to-pod-cross-node": 1450, "pod-to-service": 1450},
        "generator": {"threshold_pct": 90.0, "workers": [
            {"worker": "client-1", "cpu_pct": 95.0 if bound else 40.0, "bound": bool(bound)},
            {"worker": "client-2", "cpu_pct": 38.5, "bound": False}]},
    }


# --- tests -----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh results database in the test's own directory."""
    return Store(tmp_path / "results.sqlite")


def test_run_dir_and_store_round_trip(tmp_path: Path, store: Store) -> None:
    summary = synthetic_summary()
    run = RunDir.create(tmp_path / "runs", "flannel", "vxlan", store=store,
                        run_id=summary["run_id"], meta={"seed": 1, "users": 20})
    (run.path / "locust_stats.csv").write_text("Type,Name\n")  # the load runner's own file
    final = run.finalize(summary)

    on_disk = json.loads((run.path / "summary.json").read_text())
    assert on_disk == final == store.get(summary["run_id"])
    assert final["run_dir"] == str(run.path) and final["report"] == str(run.path / "report.html")
    for key in ("run_id", "cni", "backend", "build", "images", "duration_s", "interrupted",
                "paths", "throughput", "resources", "report"):
        assert key in on_disk
    for section in ("paths", "throughput", "resources", "baselines", "timeseries"):
        assert store.rows(section, summary["run_id"]) == summary[section], section
        with (run.path / f"{section}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(summary[section])
        assert [r.get("path") or r.get("container") for r in rows] == [
            r.get("path") or r.get("container") for r in summary[section]]
    assert (run.path / "locust_stats.csv").read_text() == "Type,Name\n"
    assert {p.name for p in run.artifacts()} >= {"summary.json", "paths.csv", "partial.jsonl",
                                                 "locust_stats.csv"}
    assert re.fullmatch(r"\d{8}T\d{6}Z-flannel-vxlan-[0-9a-f]{6}",
                        RunDir.create(tmp_path / "runs", "flannel", "vxlan").run_id)

    with sqlite3.connect(store.path) as db:
        row = db.execute("SELECT cni, backend, build, seed, users, status, interrupted, run_dir,"
                         " scenario, scenario_hash FROM runs WHERE run_id = ?",
                         (summary["run_id"],)).fetchone()
    assert row == ("flannel", "vxlan", "source", 1, 20, "complete", 0, str(run.path),
                   "default", summary["environment"]["scenario_hash"])


def test_queries_filter_and_order(store: Store) -> None:
    for i, (cni, backend) in enumerate([("flannel", "vxlan"), ("calico", "bgp"),
                                        ("flannel", "host-gw"), ("weave", "")]):
        s = synthetic_summary(cni, backend, seed=i, duration=3)
        store.add(s)
    assert [s["cni"] for s in store.last(2)] == ["weave", "flannel"]
    assert [s["backend"] for s in store.last(5, cni="flannel")] == ["host-gw", "vxlan"]
    assert [s["backend"] for s in store.last(5, cni="flannel:vxlan")] == ["vxlan"]
    assert {s["cni"] for s in store.all_for(["calico", "weave"])} == {"calico", "weave"}
    assert store.all_for([]) == []
    assert store.get("no-such-run") is None


def test_append_only(store: Store) -> None:
    summary = synthetic_summary(duration=3)
    store.begin(summary["run_id"], {"cni": "flannel", "backend": "vxlan"})
    store.record_partial(summary["run_id"], "paths", summary["paths"])
    store.finalize(summary)
    with pytest.raises(ResultsError, match="already stored"):
        store.add(summary)
    with pytest.raises(ResultsError, match="already"):
        store.finalize({**summary, "interrupted": True})
    with pytest.raises(ResultsError, match="already stored"):
        store.begin(summary["run_id"], {"cni": "flannel"})
    with pytest.raises(ResultsError):
        store.record_partial(summary["run_id"], "paths", [{"path": "pod-to-service"}])
    db = sqlite3.connect(store.path)
    late_row = f"INSERT INTO throughput (run_id, seq, path) VALUES ('{summary['run_id']}', 9, 'x')"
    for sql in ("DELETE FROM runs", "UPDATE runs SET cni = 'calico'",
                "UPDATE path_metrics SET rps = 0", "DELETE FROM timeseries",
                "DELETE FROM partial_records", late_row):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()
    assert store.get(summary["run_id"]) == json.loads(json.dumps(store.get(summary["run_id"])))
    assert store.rows("paths", summary["run_id"]) == summary["paths"]


CRASHER = textwrap.dedent("""
    import json, os, sys
    from testbed.results import RunDir, Store
    summary = json.loads(sys.stdin.read())
    store = Store(sys.argv[1])
    run = RunDir.create(sys.argv[2], summary["cni"], summary["backend"], store=store,
                        run_id=summary["run_id"], meta={"build": summary["build"], "seed": 1})
    run.record_partial("environment", summary["environment"])
    run.record_partial("baselines", summary["baselines"])
    run.record_partial("paths", summary["paths"])
    run.record_partial("timeseries", summary["timeseries"][:5])
    print(run.path, flush=True)
    os._exit(9)  # dies before finalize: no cleanup, no atexit, no flush of anything else
""")


def crash_mid_run(tmp_path: Path, store: Store, summary: dict[str, Any]) -> RunDir:
    """Run a recorder in a child process that dies before it finalizes."""
    done = subprocess.run([sys.executable, "-c", CRASHER, str(store.path), str(tmp_path / "runs")],
                          input=json.dumps(summary), capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 9, done.stderr
    return RunDir(done.stdout.strip(), store)


def test_crash_mid_run_keeps_what_was_measured(tmp_path: Path, store: Store) -> None:
    summary = synthetic_summary(duration=5)
    run = crash_mid_run(tmp_path, store, summary)
    assert run.summary() is None
    with (run.path / "partial.jsonl").open("a") as f:
        f.write('{"section": "paths", "rows": [{"pa')  # a torn last line, as a crash leaves it

    recorded = run.partial()
    stored = store.get(summary["run_id"])
    assert stored is not None and stored["status"] == "running"
    for got in (recorded, stored):
        assert got["paths"] == summary["paths"]
        assert got["baselines"] == summary["baselines"]
        assert got["timeseries"] == summary["timeseries"][:5]
        assert got["environment"] == summary["environment"]

    assert store.interrupt_stale() == [summary["run_id"]]
    final = store.get(summary["run_id"])
    assert final is not None and final["interrupted"] is True
    assert final["status"] == "interrupted"
    assert store.rows("paths", summary["run_id"]) == summary["paths"]
    assert store.interrupt_stale() == []

    recovered = run.recover()  # the run dir catches up; the store already holds it
    assert recovered["interrupted"] is True and recovered["paths"] == summary["paths"]
    assert json.loads((run.path / "summary.json").read_text()) == recovered


def test_recover_from_run_dir_marks_interrupted(tmp_path: Path, store: Store) -> None:
    summary = synthetic_summary(cni="calico", backend="bgp", duration=5)
    run = crash_mid_run(tmp_path, store, summary)
    final = run.recover()
    assert final["interrupted"] is True and final["status"] == "interrupted"
    assert final["build"] == "source" and final["paths"] == summary["paths"]
    stored = store.get(summary["run_id"])
    assert stored == final
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT status, interrupted FROM runs").fetchall() == [
            ("interrupted", 1)]


def test_ctrl_c_finalize_keeps_partial_sections(tmp_path: Path, store: Store) -> None:
    summary = synthetic_summary(duration=5)
    run = RunDir.create(tmp_path, "flannel", "vxlan", store=store, run_id=summary["run_id"])
    run.record_partial("throughput", summary["throughput"][:2])
    run.record_partial("paths", [{**summary["paths"][0], "requests": 1}])
    run.record_partial("paths", summary["paths"])  # a later snapshot supersedes the first
    final = run.finalize({"interrupted": True, "build": "source"})
    assert final["interrupted"] is True and final["status"] == "interrupted"
    assert final["paths"] == summary["paths"]
    assert final["throughput"] == summary["throughput"][:2]
    assert store.rows("throughput", summary["run_id"]) == summary["throughput"][:2]


def test_database_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_DB", raising=False)
    monkeypatch.setenv("TESTBED_DATA", str(tmp_path / "data"))
    assert default_path() == tmp_path / "data" / "results.sqlite"
    monkeypatch.setenv("TESTBED_DB", str(tmp_path / "elsewhere" / "r.db"))
    assert Store().path == tmp_path / "elsewhere" / "r.db"
    assert (tmp_path / "elsewhere" / "r.db").exists()


def test_newer_schema_is_refused(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute("INSERT INTO schema_version VALUES (99, '2030-01-01T00:00:00Z')")
    with pytest.raises(ResultsError, match="schema version 99"):
        Store(store.path)


def test_schema_is_documented(store: Store) -> None:
    doc = (REPO_ROOT / "testbed" / "results" / "SCHEMA.md").read_text()
    with sqlite3.connect(store.path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert set(tables) >= {"schema_version", "runs", "path_metrics", "throughput",
                               "resources", "baselines", "timeseries", "partial_records"}
        for table in tables:
            assert f"`{table}`" in doc, table
            for col in (r[1] for r in db.execute(f"PRAGMA table_info({table})")):
                assert f"`{col}`" in doc, f"{table}.{col}"


def test_bad_rows_are_refused(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "flannel", "vxlan")
    with pytest.raises(ResultsError, match="unknown results section"):
        run.record_partial("latencies", [])
    with pytest.raises(ResultsError, match="dict or a list of dicts"):
        run.record_partial("paths", ["pod-to-service"])
    with pytest.raises(ResultsError, match=r"paths\.0\.rps='fast' is not valid: .*number"):
        run.finalize({"paths": [{"path": "pod-to-service", "rps": "fast"}]})
    with pytest.raises(ResultsError, match="already exists"):
        RunDir.create(tmp_path, "flannel", "vxlan", run_id=run.run_id)


def test_schema_md_is_generated_from_the_models() -> None:
    from testbed.results import schemadoc
    doc = (REPO_ROOT / "testbed" / "results" / "SCHEMA.md").read_text()
    assert doc == schemadoc.render(), (
        "testbed/results/SCHEMA.md is stale: python3 -m testbed.results.schemadoc "
        "> testbed/results/SCHEMA.md")
