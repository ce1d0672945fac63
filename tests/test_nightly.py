"""The nightly: the regression rule on seeded synthetic histories, the report, JUnit, the
matrix file, scheduling, and one real two-CNI night on Docker opened in headless Chromium."""

from __future__ import annotations

import json
import random
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser import start_chrome
from conftest import RUN_ID, run_cli

from testbed.nightly import analyze, matrix, report, rule, schedule, simulate
from testbed.results import Store

FLANNEL, CALICO = "flannel:vxlan [light]", "calico:bgp [light]"
NIGHTS = 30
ENV = {"kernel": "6.1.0-28-amd64", "docker_version": "26.1.5", "release": "v0.28.10",
       "image_digests": {"cni": "sha256:aaa", "node": "sha256:bbb"}}

# series -> night index -> (rps, p99_ms)
Shape = Callable[[int, random.Random], tuple[float, float]]


def stable(cv: float = 0.03) -> Shape:
    return lambda i, r: (1000 * (1 + cv * r.gauss(0, 1)), 20 * (1 + cv * r.gauss(0, 1)))


def step_rps(at: int, drop: float = 0.25) -> Shape:
    base = stable()
    return lambda i, r: ((lambda v: (v[0] * (1 - drop if i >= at else 1), v[1]))(base(i, r)))


def drift_p99(per_night: float = 0.015) -> Shape:
    base = stable()
    return lambda i, r: ((lambda v: (v[0], v[1] * (1 + per_night * i)))(base(i, r)))


def write_history(store: Store, shapes: dict[str, Shape], nights: int = NIGHTS, seed: int = 1,
                  env_change: dict[int, dict[str, Any]] | None = None) -> list[str]:
    """`nights` nights, one run per series each, as the nightly stores them."""
    rng = random.Random(seed)
    ids = []
    for i in range(nights):
        nid = f"night-202611{i + 1:02d}T020000Z-{i:06x}"
        ids.append(nid)
        for series, shape in shapes.items():
            rps, p99 = shape(i, rng)
            cni, _, backend = series.split(" ")[0].partition(":")
            env = dict(ENV)
            for at, change in sorted((env_change or {}).items()):
                if i >= at:
                    env.update(change)
            store.add({"run_id": f"{nid}-{cni}", "cni": cni, "backend": backend,
                       "build": "source", "scenario": "light", "nightly_id": nid,
                       "nightly_entry": series, "started_at": f"2026-11-{i + 1:02d}T02:00:00Z",
                       "environment": env,
                       "paths": [{"path": "pod-to-service", "requests": 1000, "failures": 0,
                                  "rps": rps, "p50_ms": p99 / 4, "p99_ms": p99}]})
    return ids


def flags(a: analyze.Analysis) -> set[tuple[str, str, str]]:
    return {(r.series, r.key, r.verdict.status) for r in a.flagged}


def test_stable_history_gives_no_flag(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    write_history(store, {FLANNEL: stable(), CALICO: stable()})
    a = analyze.analyze(store)
    assert flags(a) == set()
    assert {r.verdict.status for r in a.rows} <= {"ok", "improved"}
    assert len(a.nights) == NIGHTS and a.env == {FLANNEL: [], CALICO: []}


def test_a_step_change_is_flagged_with_the_environment_change_beside_it(tmp_path: Path,
                                                                      ) -> None:
    store = Store(tmp_path / "db.sqlite")
    write_history(store, {FLANNEL: step_rps(NIGHTS - 1), CALICO: stable()},
                  env_change={NIGHTS - 1: {"kernel": "6.1.0-30-amd64"}})
    a = analyze.analyze(store)
    assert flags(a) == {(FLANNEL, "paths.pod-to-service.rps", "regression")}
    (row,) = a.flagged
    assert row.env_changes == ["kernel: 6.1.0-28-amd64 -> 6.1.0-30-amd64"]
    assert row.verdict.change is not None and row.verdict.change < -0.2


def test_an_improvement_is_not_a_regression(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    write_history(store, {FLANNEL: step_rps(NIGHTS - 1, drop=-0.3)})
    a = analyze.analyze(store)
    assert flags(a) == set()
    assert {r.key: r.verdict.status for r in a.rows}["paths.pod-to-service.rps"] == "improved"


def test_a_slow_drift_is_flagged_as_drift(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    write_history(store, {FLANNEL: drift_p99(), CALICO: stable()})
    a = analyze.analyze(store)
    got = flags(a)
    assert (FLANNEL, "paths.pod-to-service.p99_ms", "drift") in got
    assert {s for s, _, _ in got} == {FLANNEL}
    assert all(k.endswith(("p99_ms", "p50_ms")) for _, k, _ in got)  # p50 drifts with p99 here


def test_a_noisy_but_unchanged_metric_is_not_flagged(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    write_history(store, {FLANNEL: stable(0.15), CALICO: stable(0.15)}, seed=7)
    assert flags(analyze.analyze(store)) == set()


def test_too_little_history_gives_no_verdict(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    write_history(store, {FLANNEL: step_rps(3, drop=0.5)}, nights=4)
    a = analyze.analyze(store)
    assert flags(a) == set()
    assert {r.verdict.status for r in a.rows} == {"insufficient"}


def test_false_flag_rate_on_stable_history_is_low() -> None:
    for cv in (0.02, 0.05, 0.15):
        rate = simulate.false_flags(300, cv=cv)
        assert rate.judged == 300 * 25 * 2
        assert rate.per_night < 0.005, (cv, rate)
        assert rate.per_history < 0.1, (cv, rate)


def test_rule_edge_cases() -> None:
    assert rule.judge([], "higher").status == "missing"
    assert rule.judge([1.0] * 6 + [None], "higher").status == "missing"
    # a share that was always 0: the unit floor keeps 0.5% of failures from being a regression
    assert rule.judge([0.0] * 10 + [0.005], "lower", "share").status == "ok"
    assert rule.judge([0.0] * 10 + [0.05], "lower", "share").status == "regression"
    assert rule.judge([10.0] * 10 + [10.4], "lower", "ms").status == "ok"  # < 5%: never
    assert rule.judge([10.0] * 10 + [12.0], "lower", "ms").status == "regression"


def test_report_junit_and_exit_code_from_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    write_history(Store(db), {FLANNEL: step_rps(NIGHTS - 1), CALICO: stable()})
    xml = tmp_path / "nightly.xml"
    res = run_cli("nightly", "--report-only", "--db", str(db), "--out", str(tmp_path / "r"),
                  "--junit", str(xml), "--json")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["flagged"] == [f"{FLANNEL} paths.pod-to-service.rps"]
    res = run_cli("nightly", "--report-only", "--db", str(db), "--out", str(tmp_path / "r"))
    assert res.returncode == 1 and f"REGRESSION {FLANNEL} paths.pod-to-service.rps" in res.stdout
    page = (tmp_path / "r" / "nightly.html").read_text()
    assert page.count('data-chart="trend-') == 4 and "REGRESSION" in page
    assert page.count("<svg") == 4  # every plot is inline SVG: nothing fetched
    assert "median of the previous 7 nights" in page  # the rule is stated
    md = (tmp_path / "r" / "nightly.md").read_text()
    assert "Regressions (1)" in md
    full = json.loads((tmp_path / "r" / "nightly.json").read_text())
    data = full["data"]
    assert data["flagged"] == [{"series": FLANNEL, "key": "paths.pod-to-service.rps"}]
    (trends,) = [s for s in full["sections"] if s["id"] == "trends"]
    bands = [b for c in trends["charts"] for b in c["bands"]]
    assert len(bands) == 8 and all(b["low"] < b["high"] and b["last"] == NIGHTS for b in bands)
    suite = ET.parse(xml).getroot()
    cases = suite.findall("testcase")
    assert len(cases) == 8 and suite.get("failures") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [
        (FLANNEL, "paths.pod-to-service.rps -> previous 7 nights")]


def test_no_regression_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    write_history(Store(db), {FLANNEL: stable()}, nights=12)
    res = run_cli("nightly", "--report-only", "--db", str(db), "--out", str(tmp_path / "r"),
                  "--nights", "10", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "r" / "nightly.json").read_text())["data"]
    assert len(data["nights"]) == 10 and data["rule"]["history_nights"] == 10
    res = run_cli("nightly", "--report-only", "--db", str(db), "--nights", "3")
    assert res.returncode == 2 and "--nights 3" in res.stderr


def test_image_digest_and_release_changes_are_listed(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    write_history(store, {FLANNEL: step_rps(NIGHTS - 1)}, env_change={
        20: {"image_digests": {"cni": "sha256:ccc", "node": "sha256:bbb"}},
        NIGHTS - 1: {"release": "v0.28.11"}})
    a = analyze.analyze(store)
    (row,) = a.flagged
    assert row.env_changes == ["release: v0.28.10 -> v0.28.11"]  # the night of the step
    assert [c for _, cs in a.env[FLANNEL] for c in cs] == [
        "image_digests.cni: sha256:aaa -> sha256:ccc", "release: v0.28.10 -> v0.28.11"]
    res = run_cli("nightly", "--report-only", "--db", str(store.path), "--out",
                  str(tmp_path / "r"))
    assert res.returncode == 1
    assert "image_digests.cni: sha256:aaa -&gt; sha256:ccc" in (
        tmp_path / "r" / "nightly.html").read_text()


@pytest.mark.parametrize(("text", "expect"), [
    ("cnis: [flannel, nope]\n", "cnis: 'nope': unknown CNI"),
    ("cnis: [flannel:host-gw, flannel:host-gw]\n", "listed twice"),
    ("cnis: [flannel]\ntrials: 0\n", "trials"),
    ("cnis: [flannel]\ncolour: red\n", "colour"),
    ("- flannel\n", "the top level is list"),
    ("cnis: []\n", "cnis"),
    ("cnis: [flannel]\nscenarios: [no-such-scenario]\n", "no-such-scenario"),
])
def test_a_bad_matrix_is_refused_in_one_line(tmp_path: Path, text: str, expect: str) -> None:
    f = tmp_path / "m.yaml"
    f.write_text(text)
    res = run_cli("nightly", "--matrix", str(f), "--db", str(tmp_path / "db.sqlite"),
                  "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    assert expect in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "db.sqlite").exists() or not analyze.history.nights(
        Store(tmp_path / "db.sqlite"))


def test_the_default_matrix_is_valid() -> None:
    m = matrix.load(None)
    assert [e.label for e in matrix.entries(m)] == [FLANNEL, CALICO]


def test_install_timer_and_cron_line(tmp_path: Path) -> None:
    units = tmp_path / "units"
    res = run_cli("nightly", "--install-timer", "--unit-dir", str(units), "--at", "03:15",
                  "--db", str(tmp_path / "n.sqlite"))
    assert res.returncode == 0, res.stderr
    service = (units / "testbed-nightly.service").read_text()
    timer = (units / "testbed-nightly.timer").read_text()
    assert "ExecStart=" in service and "-m testbed nightly" in service
    assert f"--db {tmp_path / 'n.sqlite'}" in service and "SuccessExitStatus=1" in service
    assert "OnCalendar=*-*-* 03:15:00" in timer and "WantedBy=timers.target" in timer
    if shutil.which("systemd-analyze"):  # the units parse as systemd reads them
        import subprocess
        check = subprocess.run(["systemd-analyze", "verify", "--user",
                                str(units / "testbed-nightly.timer")],
                               capture_output=True, text=True)
        assert "Unknown key" not in check.stderr and "Unknown section" not in check.stderr
    res = run_cli("nightly", "--print-cron", "--at", "2:05")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip()
    assert line.startswith("5 2 * * * cd ") and "-m testbed nightly" in line
    assert run_cli("nightly", "--print-cron", "--at", "25:00").returncode == 2


def test_the_ci_example_runs_the_nightly_and_keeps_the_report() -> None:
    import yaml

    from testbed.paths import REPO_ROOT

    flow = yaml.safe_load((REPO_ROOT / "docs" / "ci-nightly.example.yml").read_text())
    steps = flow["jobs"]["nightly"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "python3 -m testbed nightly" in runs and "--junit" in runs
    kept = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert kept and "nightly.html" in kept[0]["with"]["path"] and kept[0]["if"] == "always()"


def test_schedule_units_name_the_matrix() -> None:
    cmd = schedule.command(Path("scenarios/nightly/default.yaml"), None)
    assert cmd[-2] == "--matrix" and Path(cmd[-1]).is_absolute()
    assert report.VERDICT_WORDS["drift"].startswith("REGRESSION")


@pytest.mark.docker
def test_a_two_cni_night_on_docker_opens_in_chromium(tmp_path: Path,
                                                     built: dict[str, str]) -> None:
    """The default matrix (flannel:vxlan and calico:bgp on `light`, one trial each) for real;
    its report's trend plots are drawn in headless Chromium."""
    db, out = tmp_path / "db.sqlite", tmp_path / "night"
    start = time.monotonic()
    res = run_cli("nightly", "--db", str(db), "--out", str(out), "--json",
                  "--cluster-prefix", f"tbt-nightly-{RUN_ID}", "--junit",
                  str(tmp_path / "n.xml"), timeout=1800)
    wall = time.monotonic() - start
    assert res.returncode == 0, res.stderr[-3000:]  # one night: no history, no flag
    doc = json.loads(res.stdout)
    print(f"default nightly matrix: {wall:.0f} s wall")
    assert [(r["series"], r["status"]) for r in doc["runs"]] == [
        (FLANNEL, "complete"), (CALICO, "complete")], doc["runs"]  # the errors, if any
    assert len({r["run_id"] for r in doc["runs"]}) == 2
    nights = analyze.history.nights(Store(db))
    assert len(nights) == 1 and nights[0].nightly_id == doc["nightly_id"]
    assert all(r.environment.get("kernel") for r in nights[0].runs)
    driver = start_chrome()
    try:
        driver.get((out / "nightly.html").as_uri())
        charts = driver.execute_script(
            "return [...document.querySelectorAll('svg[data-chart^=\"trend-\"]')].map(s => {"
            " const r = s.getBoundingClientRect();"
            " const all = [...s.querySelectorAll('.series')];"
            " const drawn = all.filter(e => {"
            "   const b = e.getBBox(); return b.width > 0 && b.height > 0; });"
            " return [s.dataset.chart, r.width, r.height, all.length, drawn.length]; })")
    finally:
        driver.quit()
    assert len(charts) >= 4, charts  # rps, p50, p99, Gbit/s at least
    # every plot is drawn: each series it has is a visible mark (a metric only one CNI has,
    # e.g. generator-bound on the other, is a plot of one series)
    assert all(w > 100 and h > 100 and n >= 1 and drawn == n
               for _, w, h, n, drawn in charts), charts
    assert sum(n == 2 for *_, n, _ in charts) >= 4, charts  # both CNIs on the shared metrics


def test_a_failed_run_is_stored_as_failed_and_the_night_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.errors import StepError
    from testbed.nightly import runner
    from testbed.run import pipeline

    seen: list[str] = []

    def execute(run: pipeline.Run) -> dict[str, Any]:  # what pipeline.execute stores
        assert run.rundir is not None
        seen.append(run.name)
        if run.cni.name == "flannel":
            run.rundir.finalize({"status": "failed", "error": "step X: boom"})
            raise StepError("step X: boom")
        if run.cni.name == "weave":
            run.rundir.finalize({"status": "interrupted", "interrupted": True})
            raise KeyboardInterrupt
        return run.rundir.finalize({"paths": [{"path": "pod-to-service", "requests": 10,
                                               "failures": 0, "rps": 5.0}]})

    monkeypatch.setattr(pipeline, "execute", execute)
    db = str(tmp_path / "db.sqlite")
    m = matrix.Matrix(cnis=["flannel", "calico", "weave", "calico:vxlan"], duration_s=3)
    planned = runner.plan(m, tmp_path / "out", db)
    night = runner.run_night(None, planned, "night-test", "tbt-nightly-x")  # type: ignore[arg-type]
    assert [(o.entry.label, o.status) for o in night.outcomes] == [
        ("flannel:vxlan [light]", "failed"), ("calico:bgp [light]", "complete"),
        ("weave:auto [light]", "interrupted")]  # Ctrl-C stops the night: calico:vxlan never ran
    assert night.interrupted and seen == ["tbt-nightly-x-1", "tbt-nightly-x-2", "tbt-nightly-x-3"]
    (stored,) = analyze.history.nights(Store(db))
    assert [(r.series, r.status, r.error) for r in stored.runs] == [
        ("flannel:vxlan [light]", "failed", "step X: boom"),
        ("calico:bgp [light]", "complete", ""), ("weave:auto [light]", "interrupted", "")]


@pytest.mark.docker
def test_ctrl_c_stops_the_night_keeps_what_was_stored_and_tears_down(
        tmp_path: Path, built: dict[str, str]) -> None:
    import signal
    import subprocess
    import sys

    from conftest import leftovers

    from testbed.provider.docker import DockerProvider

    prefix = f"tbt-nightly-c{RUN_ID}"
    db, out = tmp_path / "db.sqlite", tmp_path / "night"
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "nightly", "--db", str(db),
                             "--out", str(out), "--cluster-prefix", prefix],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 600
        while "• Load: pod-to-service" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            seen += line
        assert "• Load: pod-to-service" in seen, seen[-3000:]
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        run_cli("down", f"{prefix}-1")
    seen += rest
    assert proc.returncode == 130, seen[-3000:]
    assert leftovers(DockerProvider(), f"{prefix}-1") == []
    (night,) = analyze.history.nights(Store(db))
    assert [(r.series, r.status) for r in night.runs] == [(FLANNEL, "interrupted")]
    assert "2/2" not in seen  # the night stopped: calico never started
    assert (out / "nightly.html").exists()  # what was stored is still reported
