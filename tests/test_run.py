"""The main job end to end on real Docker: run, store, report, compare, interrupt."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import browser_charts
from conftest import RUN_ID, run_cli

from testbed.paths import REPO_ROOT
from testbed.provider.docker import DockerProvider

pytestmark = pytest.mark.docker
SHORT = ["--duration", "4", "--users", "4", "--spawn-rate", "4"]


class _Svgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.svgs = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"
        for k, v in attrs:
            if k in ("src", "href") and v and v.startswith(("http:", "https:", "//")):
                self.external.append(v)


def _run(cni: str, tmp: Path, *extra: str) -> dict[str, object]:
    res = run_cli("run", cni, *SHORT, "--out", str(tmp / "runs"), "--db",
                      str(tmp / "results.sqlite"), "--json", *extra, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(json.loads(res.stdout))


def _no_clusters_named(prefix: str) -> bool:
    return not [n for n in DockerProvider().clusters() if n.startswith(prefix)]


MTU = {"flannel:vxlan": 1450, "calico:bgp": 1500}


# weave cannot run a cluster on this machine's kernel (no dummy links: tests/test_weave.py).
@pytest.mark.parametrize("cni", ["flannel:vxlan", "calico:bgp"])
def test_short_run_measures_every_path_and_stores_it(cni: str, tmp_path: Path,
                                                     built: dict[str, str]) -> None:
    # the flannel run sweeps too (the whole pipeline once); tests/test_sweep.py covers sweeps
    summary = _run(cni, tmp_path, *(["--no-sweep"] if cni.startswith("calico") else []))
    assert summary["cni"] == cni.split(":")[0] and summary["build"] == "source"
    assert bool(summary.get("sweeps")) == cni.startswith("flannel")
    assert {r["kind"] for r in summary["latency"]["rows"]} == {"rr", "crr"}
    assert summary["interrupted"] is False
    paths = {p["path"]: p for p in summary["paths"]}  # type: ignore[attr-defined]
    assert set(paths) == {"pod-to-service", "nodeport", "ingress"}
    for p in paths.values():
        assert p["requests"] > 0 and p["failures"] == 0, p
        assert 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"] + 1
    kinds = {b["path"] for b in summary["baselines"]}  # type: ignore[attr-defined]
    assert {"container-to-container", "node-to-node"} <= kinds
    tput = summary["throughput"]
    assert {(t["path"], t["protocol"]) for t in tput} >= {  # type: ignore[attr-defined]
        ("pod-to-pod-cross-node", "tcp"), ("pod-to-service", "tcp"),
        ("pod-to-pod-cross-node", "udp")}
    assert all(t["gbit_s"] > 0 for t in tput)  # type: ignore[attr-defined]
    # Each path's MTU is the pod's own eth0, as upstream sets it on Docker's 1500-byte
    # network: flannel's vxlan leaves 50 bytes of overhead, calico's BGP none, and weave's
    # default is 1376.
    assert {t["mtu"] for t in tput} == {  # type: ignore[attr-defined]
        MTU[cni]}, tput
    phases = {r["phase"] for r in summary["resources"]}  # type: ignore[attr-defined]
    assert "idle" in phases and "load:pod-to-service" in phases
    # The run directory holds what the summary says, and so does the database.
    run_dir = tmp_path / "runs" / str(summary["run_id"])
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["paths"] == summary["paths"]
    assert (run_dir / "locust" / "pod-to-service" / "locust_report.html").exists()
    db = sqlite3.connect(tmp_path / "results.sqlite")
    rows = db.execute("SELECT path, requests FROM path_metrics WHERE run_id = ?",
                      (summary["run_id"],)).fetchall()
    assert dict(rows) == {p: v["requests"] for p, v in paths.items()}
    # The HTML report parses, holds its plots, and fetches nothing from the network.
    parser = _Svgs()
    parser.feed(Path(str(summary["report"])).read_text())
    assert parser.svgs >= 4 and parser.external == []
    assert _no_clusters_named("run-")


def _one_path_scenario(tmp: Path) -> Path:
    """The light scenario with one path under load (each Locust phase costs ~7 s of set-up)."""
    text = (REPO_ROOT / "scenarios" / "light.yaml").read_text()
    lines = [("load: {users: 4, spawn_rate: 4, duration_s: 5, seed: 1, workers: 1, "
              "paths: [pod-to-service]}") if line.startswith("load:") else line
             for line in text.splitlines()]
    assert any("paths: [pod-to-service]" in line for line in lines)
    lines.append("sweep: {enabled: false}")  # tests/test_sweep.py covers the sweep
    path = tmp / "one-path.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_two_cnis_with_trials_gives_intervals_verdicts_and_a_drawn_report(
        tmp_path: Path, built: dict[str, str]) -> None:
    res = run_cli("compare", "flannel:host-gw", "calico:vxlan", "--scenario",
                  str(_one_path_scenario(tmp_path)), "--trials", "2",
                  "--out", str(tmp_path / "runs"), "--db", str(tmp_path / "db.sqlite"),
                  "--json", timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert len(doc["runs"]) == 2 and doc["trials"] == 2
    verdicts = {v["metric"]: v for v in doc["verdicts"]}
    for key in ("paths.pod-to-service.rps", "latency.pod-to-pod-cross-node.rr.p50_us",
                "throughput.pod-to-pod-cross-node.tcpx1.gbit_s"):
        v = verdicts[key]
        assert len(v["figures"]) == 2, v
        for f in v["figures"].values():  # two trials each: a real interval around the median
            assert f["n"] == 2 and f["low"] <= f["high"] and len(f["samples"]) == 2, f
        assert v["ranked"] and v["test"].startswith("Welch")
        assert (v["winner"] is None) == (not v["significant"]), v
        assert v["reason"]
    assert not verdicts["baselines.node-to-node.rps"]["ranked"]
    # Every row carries its trial, and the second trial measured the CNIs in the other order.
    summaries = [json.loads((tmp_path / "runs" / r / "summary.json").read_text())
                 for r in doc["runs"]]
    for s in summaries:
        assert {p["trial"] for p in s["paths"]} == {1, 2}
        assert {r["trial"] for r in s["latency"]["rows"]} == {1, 2}
        assert {r["work"] for r in s["cost"]["rows"]} == {"gbit", "requests"}
    order = summaries[0]["trials"]["order"]
    assert order == [doc["runs"], doc["runs"][::-1]]
    html = Path(doc["report"]).read_text()
    assert html.index('id="verdict"') < html.index('id="curves"') < html.index('id="columns"')
    assert "github.com/flannel-io/flannel@v0.28.10" in html
    assert "github.com/projectcalico/calico@v0.0.0-20251021213802-b1f3c43f8437" in html
    drawn = browser_charts(Path(doc["report"]))
    assert len(drawn) >= 6, drawn
    for chart in drawn:
        assert chart["width"] > 100 and chart["height"] > 100, chart
        assert chart["series"] > 0, f"chart {chart['id']} has nothing plotted"


def test_interrupted_run_is_stored_and_marked(tmp_path: Path, built: dict[str, str]) -> None:
    out, db = tmp_path / "runs", tmp_path / "db.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", "flannel", "--duration",
                             "30", "--users", "4", "--out", str(out), "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    deadline = time.monotonic() + 600
    seen = ""
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "Load: pod-to-service" in line or not line:
            break
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, seen + err
    runs = list(out.iterdir())
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["baselines"], "measurements before the interrupt are kept"
    row = sqlite3.connect(db).execute("SELECT interrupted, status FROM runs").fetchone()
    assert row == (1, "interrupted")
    assert _no_clusters_named("run-")


def test_bad_run_input_is_exit_2_before_anything_starts(tmp_path: Path) -> None:
    for args, needle in [
        (["run", "cilium"], "unknown CNI"),
        (["run", "flannel", "--users", "0"], "--users 0 is out of range"),
        (["run", "flannel", "--duration", "-3"], "--duration -3 is out of range"),
        (["run", "flannel", "--spawn-rate", "0"], "--spawn-rate 0 is out of range"),
        (["run", "flannel", "--out", "/proc/testbed"], "is not writable"),
    ]:
        res = run_cli(*args, "--db", str(tmp_path / f"db-{RUN_ID}.sqlite"))
        assert res.returncode == 2, (args, res.stderr)
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("db-*.sqlite"))
