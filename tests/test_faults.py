"""Faults: each kind takes effect (traffic really stops), is undone, and is measured."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Running, run_cli, start

from testbed.cluster.agent import NodeAgent
from testbed.cluster.etcd import ClusterEtcd
from testbed.errors import UserError
from testbed.faults import control, play, runner, spec, state
from testbed.faults.metrics import recovery
from testbed.load.locust import Profile
from testbed.provider.docker import DockerProvider
from testbed.run import targets
from testbed.scenario import Scenario, validate

# ---- unit: kinds, targets, timelines, recovery metrics ----------------------------------


def test_delay_and_loss_are_refused_naming_netem() -> None:
    for kind in ("delay", "loss"):
        with pytest.raises(UserError, match="no netem"):
            spec.check_kind(kind)


def test_cli_refuses_delay_in_one_line_with_exit_2() -> None:
    res = run_cli("fault", "tbt-faults-none", "delay", "1")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "netem" in lines[0] and "allowed: node-stop" in lines[0]


def test_targets_and_partitions_parse() -> None:
    assert spec.parse_target("partition", "1,2:3", "c", 3) == ((1, 2), (3,))
    assert spec.parse_target("partition", "3", "c", 3) == ((3,), (1, 2))
    assert spec.parse_target("node-kill", "c-node-2", "c", 3) == ((2,), ())
    assert spec.parse_target("cni-restart-all", "all", "c", 3) == ((1, 2, 3), ())
    for kind, target in (("partition", "1:1"), ("node-kill", "4"), ("etcd-stop", "1"),
                         ("link-down", "1,2"), ("partition", "1,2,3")):
        with pytest.raises(UserError, match="allowed"):
            spec.parse_target(kind, target, "c", 3)
    with pytest.raises(UserError, match="--rate"):
        spec.build("rate", "1", "c", 3, rate="fast")
    with pytest.raises(UserError, match="single action"):
        spec.build("cni-restart", "1", "c", 3, for_s=5)
    assert spec.parse_duration("500ms") == 0.5 and spec.parse_duration("2m") == 120


def _scenario(faults: list[dict[str, Any]] | None = None, nodes: int = 2) -> Scenario:
    return validate({
        "name": "faults-test", "nodes": nodes, "edge": False,
        "cni": {"name": "flannel", "backend": "vxlan", "build": "source"},
        "deployments": [
            {"name": "echo", "replicas": 2, "labels": {"app": "echo"},
             "containers": [{"name": "app", "port": 8080}]},
            {"name": "client", "replicas": 2, "labels": {"role": "client"},
             "placement": {"nodes": [1]}, "containers": [{"name": "app", "port": 8080}]}],
        "services": [{"name": "echo", "type": "NodePort", "selector": {"app": "echo"},
                      "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}],
        "load": {"users": 4, "spawn_rate": 4, "duration_s": 14, "workers": 1,
                 "paths": ["nodeport"]},
        "faults": faults or []}, "test")


def test_timeline_is_validated_with_clear_errors() -> None:
    ok = _scenario([{"at": "3s", "kind": "partition", "nodes": [2], "for": "4s"}])
    assert ok.faults[0].at == 3 and ok.faults[0].for_s == 4
    assert ok.faults[0].fault("c", 2).others == (1,)
    bad = [({"at": "3s", "kind": "loss", "nodes": [2]}, "no netem"),
           ({"at": "30s", "kind": "partition", "nodes": [2]}, "not within the load phase"),
           ({"at": "1s", "kind": "node-kill", "nodes": [3]}, "not a node"),
           ({"at": "1s", "kind": "node-kill"}, "nodes is missing"),
           ({"at": "soon", "kind": "etcd-stop"}, "not a duration")]
    for event, words in bad:
        with pytest.raises(UserError, match=words):
            _scenario([event])


def _series(start: int, fail_from: int, fail_to: int, slow_to: int) -> list[dict[str, Any]]:
    """40 s at 10 req/s; every request fails in [fail_from, fail_to), p95 high until slow_to."""
    rows, req, fail = [], 0, 0
    for t in range(start, start + 40):
        req += 10
        fail += 10 if fail_from <= t < fail_to else 0
        slow = fail_to <= t < slow_to
        rows.append({"t": t, "users": 4, "rps": 10.0, "requests": req, "failures": fail,
                     "p95_ms": 50.0 if slow else 2.0, "p99_ms": 80.0 if slow else 3.0})
    return rows


def test_recovery_metrics_on_a_synthetic_series() -> None:
    t0 = 1_000_000
    rows = _series(t0, t0 + 12, t0 + 18, t0 + 24)
    got = recovery(rows, start=t0 + 10.0, end=t0 + 16.0)
    assert got["first_failure_s"] == 2.0  # the fault began at 10, failures from 12
    assert got["failures"] == 60 and got["requests"] == 70  # samples 11..17: 12..17 fail
    assert got["failed_share"] == pytest.approx(60 / 70, abs=1e-4)
    assert got["last_failure_after_s"] == 1.0  # failures go on until 17 (end 16)
    assert got["first_success_after_s"] == 2.0  # the first whole success is at 18
    assert got["p95_pre_ms"] == 2.0 and got["p95_back_s"] == 8.0  # slow until 24
    assert got["p99_back_s"] == 8.0
    assert recovery(rows, t0 + 10.0, t0 + 16.0, horizon=t0 + 17.0)["last_failure_after_s"] == 1
    assert recovery(rows, t0 + 10.0, t0 + 16.0, horizon=t0 + 17.0)["p95_back_s"] is None
    assert got["ok_rps_pre"] == 10.0 and got["throughput_drop"] == pytest.approx(
        1 - (10 / 7) / 10, abs=1e-4)  # 10 successes in 7 s against 10/s before


def test_error_kinds_per_fault_until_the_next_one() -> None:
    t0 = 1_500_000
    rows = _series(t0, t0 + 12, t0 + 18, t0 + 18)  # 10 failures a second, 12..17
    # the locustfile's rows for the same failures: timeouts, then refusals while it came back
    errors = [{"t": t, "kind": "timeout" if t < t0 + 16 else "connection_refused", "count": 10}
              for t in range(t0 + 12, t0 + 18)]
    errors += [{"t": t0 + 31, "kind": "http_502", "count": 4},  # the second fault's
               {"t": t0 + 5, "kind": "connection_reset", "count": 1}]  # before any fault
    played = [{"fault": "partition 2:1", "applied": t0 + 10.0, "end": t0 + 16.0},
              {"fault": "cni-restart 2", "applied": t0 + 30.5, "end": t0 + 31.0},
              {"fault": "node-kill 2", "skipped": "the load phase ended first"}]
    first, second, skipped = play.with_recovery(played, rows, errors)
    assert first["error_kinds"] == {"timeout": 40, "connection_refused": 20}
    assert list(first["error_kinds"]) == ["timeout", "connection_refused"]  # most first
    # the window's failures (samples 11..17), and every later one until the next fault
    assert sum(first["error_kinds"].values()) == first["failures"] == 60
    assert second["error_kinds"] == {"http_502": 4}  # its second began before it: counted
    assert "error_kinds" not in skipped
    assert "error_kinds" not in play.with_recovery(played, rows)[0]  # no per-second kinds


def test_recovery_without_failures_or_successes() -> None:
    t0 = 2_000_000
    clean = recovery(_series(t0, 0, 0, 0), start=t0 + 10.0, end=t0 + 15.0)
    assert clean["failed_share"] == 0 and clean["first_failure_s"] is None
    assert clean["p95_back_s"] == 1.0
    dead = recovery(_series(t0, t0 + 10, t0 + 99, t0 + 99), start=t0 + 10.0, end=t0 + 15.0)
    assert dead["failed_share"] == 1.0 and dead["first_success_after_s"] is None
    assert dead["p95_back_s"] is None


# ---- docker: one small flannel cluster shared by every fault --------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fault state files in a folder of this module's own."""
    folder = tmp_path_factory.mktemp("faults-data")
    before = os.environ.get("TESTBED_DATA")
    os.environ["TESTBED_DATA"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("TESTBED_DATA", None)
    else:
        os.environ["TESTBED_DATA"] = before


@pytest.fixture(scope="module")
def cluster(provider: DockerProvider, built: dict[str, str], data: Path) -> Iterator[Running]:
    """A 2-node flannel vxlan cluster: clients on node 1, echo pods on both nodes."""
    with start(provider, "faults", "flannel:vxlan", nodes=2, scenario=_scenario()) as running:
        yield running


def _pod(running: Running, name: str) -> dict[str, Any]:
    for i in (1, 2):
        for pod in NodeAgent(running.provider, f"{running.name}-node-{i}").pods():
            if pod["name"] == name:
                return {**pod, "node_container": f"{running.name}-node-{i}"}
    raise AssertionError(f"no pod {name}")


def _reach(running: Running, src: str, dst: str) -> bool:
    """One HTTP GET from pod `src` to pod `dst` (1 s timeout)."""
    s, d = _pod(running, src), _pod(running, dst)
    ip = str(d["ip"]).split("/")[0]
    reply = NodeAgent(running.provider, s["node_container"]).probe(
        src, f"http://{ip}:8080/", count=1, timeout=1)
    return bool(reply["ok"])


def _fault(running: Running, kind: str, target: str, **kw: Any) -> spec.Fault:
    return spec.build(kind, target, running.name, 2, **kw)


@pytest.mark.docker
def test_partition_stops_both_directions_and_is_undone(cluster: Running) -> None:
    assert _reach(cluster, "client-0", "echo-1") and _reach(cluster, "echo-1", "echo-0")
    active = runner.inject(cluster.provider, cluster.name, _fault(cluster, "partition", "2"))
    try:
        assert [r["id"] for r in state.load(cluster.name)] == [active.id]
        assert not _reach(cluster, "client-0", "echo-1")  # node 1 -> node 2
        assert not _reach(cluster, "echo-1", "echo-0")  # node 2 -> node 1
        assert _reach(cluster, "client-0", "echo-0")  # within a side: untouched
    finally:
        runner.release(cluster.provider, cluster.name, active)
    assert not active.errors and state.load(cluster.name) == []
    assert _reach(cluster, "client-0", "echo-1") and _reach(cluster, "echo-1", "echo-0")


@pytest.mark.docker
def test_link_down_stops_traffic_and_its_routes_come_back(cluster: Running) -> None:
    node = f"{cluster.name}-node-2"
    before = cluster.provider.exec(node, ["ip", "route"]).stdout
    active = runner.inject(cluster.provider, cluster.name, _fault(cluster, "link-down", "2"))
    try:
        assert not _reach(cluster, "client-0", "echo-1")
    finally:
        runner.release(cluster.provider, cluster.name, active)
    assert cluster.provider.exec(node, ["ip", "route"]).stdout == before
    assert _reach(cluster, "client-0", "echo-1")


@pytest.mark.docker
def test_rate_shapes_with_tbf_and_is_removed(cluster: Running) -> None:
    node = f"{cluster.name}-node-2"
    active = runner.inject(cluster.provider, cluster.name,
                           _fault(cluster, "rate", "2", rate="1mbit"))
    try:
        assert "tbf" in cluster.provider.exec(node, ["tc", "qdisc", "show", "dev", "eth0"]
                                              ).stdout
        assert _reach(cluster, "client-0", "echo-1")  # slower, not cut
    finally:
        runner.release(cluster.provider, cluster.name, active)
    assert "tbf" not in cluster.provider.exec(node, ["tc", "qdisc", "show", "dev", "eth0"]
                                              ).stdout


def _status(running: Running, name: str) -> str:
    return next(c.status for c in running.provider.containers(cluster=running.name)
                if c.name == name)


@pytest.mark.docker
def test_cni_kill_and_etcd_stop_are_undone_and_the_control_plane_recovers(
        cluster: Running) -> None:
    flanneld = f"{cluster.name}-node-2-flannel"
    f = _fault(cluster, "cni-kill", "2")
    active = runner.inject(cluster.provider, cluster.name, f)
    try:
        assert _status(cluster, flanneld) != "running"
    finally:
        runner.release(cluster.provider, cluster.name, active)
    assert _status(cluster, flanneld) == "running"
    assert control.recovered(cluster.provider, cluster.name, f, active.undone, 30) is not None
    e = _fault(cluster, "etcd-stop", "etcd")
    active = runner.inject(cluster.provider, cluster.name, e)
    try:
        assert _status(cluster, f"{cluster.name}-etcd") != "running"
    finally:
        runner.release(cluster.provider, cluster.name, active)
    assert ClusterEtcd(cluster.provider, cluster.name).healthy()
    assert _reach(cluster, "client-0", "echo-1")


@pytest.mark.docker
def test_node_kill_takes_the_pods_and_the_undo_recreates_them(cluster: Running) -> None:
    f = _fault(cluster, "node-kill", "2", for_s=1.0)
    active = runner.hold(cluster.provider, cluster.name, f)
    assert not active.errors and state.load(cluster.name) == []
    assert {p["name"] for p in NodeAgent(cluster.provider, f"{cluster.name}-node-2").pods()
            } == {"echo-1"}
    assert _reach(cluster, "client-0", "echo-1") and _reach(cluster, "echo-1", "echo-0")


def _started(running: Running, name: str) -> str:
    """Docker's StartedAt of a container (it changes on every start or restart)."""
    return str(running.provider.client.containers.get(name).attrs["State"]["StartedAt"])


@pytest.mark.docker
def test_cni_restart_all_restarts_every_daemon_one_node_after_the_other(
        cluster: Running) -> None:
    daemons = [f"{cluster.name}-node-{i}-flannel" for i in (1, 2)]
    before = [_started(cluster, d) for d in daemons]
    f = _fault(cluster, "cni-restart-all", "all")
    active = runner.hold(cluster.provider, cluster.name, f)
    assert not active.errors and state.load(cluster.name) == []
    after = [_started(cluster, d) for d in daemons]
    assert all(a != b for a, b in zip(after, before, strict=True)), (before, after)
    # rolling: node 2's flanneld was restarted only once node 1's was back (ISO times sort)
    assert after[0] < after[1]
    assert all(_status(cluster, d) == "running" for d in daemons)
    assert control.recovered(cluster.provider, cluster.name, f, active.undone, 30) is not None
    assert _reach(cluster, "client-0", "echo-1") and _reach(cluster, "echo-1", "echo-0")


@pytest.mark.docker
def test_node_restart_brings_the_node_back_with_its_daemon_and_pods(cluster: Running) -> None:
    node = f"{cluster.name}-node-2"
    before = _started(cluster, node), _started(cluster, f"{node}-flannel")
    active = runner.hold(cluster.provider, cluster.name, _fault(cluster, "node-restart", "2"))
    assert not active.errors and state.load(cluster.name) == []
    after = _started(cluster, node), _started(cluster, f"{node}-flannel")
    assert after[0] != before[0] and after[1] != before[1], (before, after)
    assert {p["name"] for p in NodeAgent(cluster.provider, node).pods()} == {"echo-1"}
    assert _reach(cluster, "client-0", "echo-1") and _reach(cluster, "echo-1", "echo-0")


@pytest.mark.docker
def test_a_fault_left_by_a_finished_process_is_cleared(cluster: Running, data: Path) -> None:
    env = {"TESTBED_DATA": str(data)}
    res = run_cli("fault", cluster.name, "partition", "1:2", env=env)
    assert res.returncode == 0, res.stderr
    assert not _reach(cluster, "client-0", "echo-1")
    res = run_cli("fault", cluster.name, "clear", env=env)
    assert res.returncode == 0 and "partition 1:2" in res.stdout + res.stderr
    assert _reach(cluster, "client-0", "echo-1") and state.load(cluster.name) == []


@pytest.mark.docker
def test_a_timeline_under_load_records_failures_and_recovery(cluster: Running) -> None:
    scenario = _scenario([{"at": "4s", "kind": "partition", "nodes": [2], "for": "4s"}])
    # 8 users, each on one node's IP:nodePort (seeded): those on node 2 fail until it is back.
    profile = Profile(8, 8, 14, 1, request_timeout_s=1.0)
    phase = targets.phase(cluster.provider, cluster.name, scenario, "nodeport", profile)
    player = play.start(cluster.provider, cluster.name, scenario, "nodeport", phase)
    assert player is not None
    with play.finishing(player):
        result, partial = play.run_phase(phase, Path(os.environ["TESTBED_DATA"]), player)
    assert partial == ""
    [got] = play.measure(player, result)
    assert got["fault"] == "partition 2:1" and "error" not in got
    assert got["failures"] > 0 and 0 < got["failed_share"] < 1  # node 1's users go on
    assert got["first_failure_s"] is not None and got["first_failure_s"] <= 3
    assert got["first_success_after_s"] is not None
    assert got["control_plane_s"] is not None
    # failures by kind, from the locustfile's per-second counts: the fault's run until the
    # phase's end (no later fault), so they hold the window's failures and the tail after it,
    # and, the phase's only failures, as many as Locust counted in all
    kinds = got["error_kinds"]
    assert result.errors_from == "errors.jsonl" and kinds, result.error_kinds
    assert sum(kinds.values()) == result.failures >= got["failures"], (kinds, got)
    assert max(kinds, key=kinds.__getitem__) == "timeout", kinds  # dropped, not refused
    # a pod created on the partitioned node while the partition held: flannel's host-local
    # IPAM hands out addresses from the node's own lease, so it got one, and it is gone again
    pod = got["new_pod"]
    assert pod["node"] == f"{cluster.name}-node-2" and pod["addressed"] is True, pod
    names = [p["name"] for p in NodeAgent(cluster.provider, pod["node"]).pods()]
    assert not [n for n in names if n.startswith("fault-pod-")], names
    assert _reach(cluster, "client-0", "echo-1")


def test_the_report_draws_a_timeline_per_fault() -> None:
    from testbed.reports import faults as report
    from testbed.reports.html import chart

    t0 = 3_000_000
    ts = [{"path": "nodeport", **r} for r in _series(t0, t0 + 12, t0 + 18, t0 + 24)]
    played = {**recovery(ts, t0 + 10.0, t0 + 16.0), "fault": "partition 2:1",
              "applied": t0 + 10.0, "end": t0 + 16.0}
    sec = report.section({"faults": {"nodeport": [played]}, "timeseries": ts}, "")
    assert sec is not None and [c.id for c in sec.charts] == ["fault-0-nodeport",
                                                              "fault-0-nodeport-p95"]
    names = [s.name for s in sec.charts[0].series]
    assert names == ["ok/s", "failed/s", "fault window"]
    failed = dict(sec.charts[0].series[1].points)
    assert failed[report.BEFORE_S + 2] == 10.0 and failed[report.BEFORE_S] == 0.0
    assert 'data-chart="fault-0-nodeport"' in chart(sec.charts[0])
    assert sec.tables[0].rows[0][report.COLUMNS.index("fault")] == "partition 2:1"
    kinds = {**played, "error_kinds": {"connection_refused": 3, "timeout": 85}}
    errors = {"nodeport": [{"from": "errors.jsonl", "kinds": {"timeout": 90}, "trial": 1}]}
    sec = report.section({"faults": {"nodeport": [kinds]}, "timeseries": ts,
                          "errors": errors}, "")
    assert sec is not None
    assert sec.tables[0].rows[0][report.COLUMNS.index("error_kinds")] == \
        "timeout 85, connection_refused 3"
    assert sec.lines == ["nodeport, trial 1: failed requests by kind over the phase "
                         "(errors.jsonl): timeout 90"]
    assert report.section({"timeseries": ts}, "") is None


@pytest.mark.docker
def test_killing_the_generators_node_keeps_what_was_measured_marked_partial(
        cluster: Running) -> None:
    scenario = _scenario([{"at": "4s", "kind": "node-kill", "nodes": [1], "for": "3s"}])
    profile = Profile(4, 4, 14, 1, request_timeout_s=1.0)
    phase = targets.phase(cluster.provider, cluster.name, scenario, "nodeport", profile)
    assert phase.master.container == f"{cluster.name}-node-1"  # the clients live there
    player = play.start(cluster.provider, cluster.name, scenario, "nodeport", phase)
    assert player is not None
    with play.finishing(player):
        result, partial = play.run_phase(phase, Path(os.environ["TESTBED_DATA"]), player)
    assert partial.startswith(f"generator hit: {cluster.name}-node-1")
    assert result.requests > 0 and result.timeseries  # what Locust wrote before the kill
    [got] = play.measure(player, result)
    assert got["fault"] == "node-kill 1" and "error" not in got
    assert _reach(cluster, "client-0", "echo-1")  # node 1 and its pods are back


@pytest.mark.docker
def test_down_removes_the_cluster_with_a_stopped_node_and_etcd(cluster: Running) -> None:
    """Last: it removes the shared cluster (the fixture's own down is then a no-op)."""
    for f in (_fault(cluster, "node-stop", "2"), _fault(cluster, "etcd-stop", "etcd")):
        runner.inject(cluster.provider, cluster.name, f)
    assert len(state.load(cluster.name)) == 2
    cluster.down()
    assert cluster.cluster.leftovers() == []
    assert runner.clear(cluster.provider, cluster.name) == ["node-stop 2", "etcd-stop etcd"]
    assert state.load(cluster.name) == []


def test_the_bench_table_recomputes_error_kinds_per_trial() -> None:
    from testbed.bench import faults as bench

    t0 = 4_000_000
    ts, played, errors = [], [], []
    for trial, at in ((1, t0), (2, t0 + 100)):
        ts += [{"path": "nodeport", "trial": trial, **r}
               for r in _series(at, at + 12, at + 18, at + 18)]
        played.append({"fault": "partition 2:1", "kind": "partition", "trial": trial,
                       "applied": at + 10.0, "end": at + 16.0})
        kind = "timeout" if trial == 1 else "no_route_to_host"
        errors.append({"from": "errors.jsonl", "trial": trial, "kinds": {kind: 60},
                       "rows": [{"t": t, "kind": kind, "count": 10}
                                for t in range(at + 12, at + 18)]})
    summary = {"cni": "flannel", "backend": "vxlan", "faults": {"nodeport": played},
               "timeseries": ts, "errors": {"nodeport": errors}}
    got = bench.rows(summary)
    assert [r[-1] for r in got] == ["timeout 60", "no_route_to_host 60"]
    # trial 1's last fault is measured within its own trial, not into trial 2's failures
    col = 3 + bench.COLUMNS.index("last_failure_after_s")
    assert [r[col] for r in got] == ["1", "1"]
