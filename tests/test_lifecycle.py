"""Cluster lifecycle on real Docker: rollback, teardown, side-by-side clusters, bad input."""

from __future__ import annotations

import json

import pytest
from conftest import RUN_ID, cluster_name, leftovers, run_cli, start

from testbed.constants import LABEL_CLUSTER
from testbed.lifecycle import create
from testbed.provider.docker import DockerProvider


@pytest.mark.docker
def test_failure_mid_up_rolls_back_everything(provider: DockerProvider, built: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reached: list[str] = []

    def broken(ctx: create.UpContext) -> None:
        reached.append(ctx.name)
        assert len(leftovers(provider, ctx.name)) > 0, "nodes exist when the failure hits"
        raise RuntimeError("injected failure while starting CNI daemons")

    monkeypatch.setattr(create, "start_cni", broken)
    with pytest.raises(Exception, match="injected failure"):
        start(provider, "rb", "flannel")
    assert reached == [cluster_name("rb")]
    assert leftovers(provider, cluster_name("rb")) == []


@pytest.mark.docker
def test_two_clusters_side_by_side_then_down_removes_only_one(
        provider: DockerProvider, built: dict[str, str]) -> None:
    a = start(provider, "a", "flannel:vxlan", nodes=2)
    b = start(provider, "b", "flannel:host-gw", nodes=2)
    try:
        subnets = {provider.network_subnet(f"{x.name}-net") for x in (a, b)}
        assert len(subnets) == 2, "each cluster gets its own node network"
        for x in (a, b):
            res = run_cli("check", x.name, "--json")
            assert res.returncode == 0, res.stdout + res.stderr
            cases = json.loads(res.stdout)["cases"]
            assert [c for c in cases if c["status"] == "fail"] == []
            assert {c["path"] for c in cases if c["status"] == "pass"} >= {
                "pod-to-pod-cross-node", "pod-to-service", "outside-to-ingress"}
        res = run_cli("list", "--json")
        names = {r["name"] for r in json.loads(res.stdout)}
        assert {a.name, b.name} <= names
        res = run_cli("down", a.name)
        assert res.returncode == 0, res.stderr
        assert leftovers(provider, a.name) == []
        assert len(leftovers(provider, b.name)) > 0
        assert run_cli("check", b.name).returncode == 0
    finally:
        a.down()
        b.down()
    assert leftovers(provider, b.name) == []


@pytest.mark.docker
def test_up_and_down_through_the_cli(built: dict[str, str], provider: DockerProvider) -> None:
    name = cluster_name("cli")
    res = run_cli("up", "--cni", "flannel", "--nodes", "2", "--name", name,
                      "--build", "source")
    assert res.returncode == 0, res.stderr
    assert "built here from source (github.com/flannel-io/flannel@v0.28.10)" in res.stderr
    assert "(vxlan, source build)" in res.stderr
    try:
        again = run_cli("up", "--nodes", "2", "--name", name)
        assert again.returncode == 2
        assert f"a cluster named {name!r} already exists" in again.stderr
    finally:
        res = run_cli("down", name)
    assert res.returncode == 0
    assert leftovers(provider, name) == []


@pytest.mark.docker
def test_a_scenario_without_edge_makes_a_bare_cluster(built: dict[str, str],
                                                      provider: DockerProvider) -> None:
    name = cluster_name("bare")
    res = run_cli("up", "bench", "--nodes", "2", "--name", name, "--build", "source")
    assert res.returncode == 0, res.stderr
    try:
        assert "ingress" not in res.stderr and "internet" not in res.stderr
        roles = {c.role for c in provider.containers(name)}
        assert roles == {"datastore", "node", "cni"}, roles
        assert [n.name for n in provider.client.networks.list(
            filters={"label": f"{LABEL_CLUSTER}={name}"})] == [f"{name}-net"]
        res = run_cli("check", name, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        cases = json.loads(res.stdout)["cases"]
        passed = {c["path"] for c in cases if c["status"] == "pass"}
        assert {"pod-to-pod-same-node", "pod-to-pod-cross-node"} <= passed, passed
        assert not any(c["status"] == "fail" for c in cases)
        assert all(c["status"] == "skip" for c in cases if c["path"] == "pod-to-outside")
    finally:
        assert run_cli("down", name).returncode == 0
    assert leftovers(provider, name) == []


@pytest.mark.parametrize(("args", "needle"), [
    (["up", "--cni", "cilium"], "unknown CNI 'cilium': choose one of flannel"),
    (["up", "--cni", "flannel:ipip"], "unknown backend 'ipip' for flannel"),
    (["up", "--nodes", "0"], "--nodes 0 is out of range"),
    (["up", "--nodes", "99"], "--nodes 99 is out of range"),
    (["up", "--name", "Bad_Name"], "invalid cluster name 'Bad_Name'"),
    (["up", "no-such-scenario.yaml"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(args: list[str], needle: str) -> None:
    res = run_cli(*args, "--name", f"never-{RUN_ID}") if "--name" not in args else \
        run_cli(*args)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_unreachable_docker_is_exit_2_naming_docker() -> None:
    res = run_cli("up", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert res.returncode == 2
    assert "Docker engine" in res.stderr and len(res.stderr.strip().splitlines()) == 1
