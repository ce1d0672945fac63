"""The edge on real Docker: ingress by host and path, NodePorts from outside, egress SNAT."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Running, cluster_name, leftovers, start

from testbed.check import edge as planners
from testbed.check.cases import Case, World, inventory
from testbed.check.matrix import execute
from testbed.cluster.model import find
from testbed.constants import LABEL_CLUSTER
from testbed.edge import names as edge
from testbed.edge import registry
from testbed.edge import up as edge_up
from testbed.lifecycle import create
from testbed.provider.docker import DockerProvider
from testbed.scenario import Scenario, load

pytestmark = pytest.mark.docker


def _world(running: Running) -> World:
    cluster = find(running.provider, running.name)
    return World(cluster, inventory(running.provider, cluster))


def _internet_ip(running: Running, container: str) -> str:
    c = running.provider.client.containers.get(container)
    return str(c.attrs["NetworkSettings"]["Networks"][edge.internet_network(running.name)]
               ["IPAddress"])


def _outside_get(running: Running, url: str, host: str) -> dict[str, Any]:
    """One request from the outside client (the probe that `check` uses)."""
    res = running.provider.exec(edge.outside_name(running.name),
                                ["python3", "-m", "testbed_node.probe", url, "--count", "1",
                                 "--header", f"Host: {host}"])
    assert res.exit_code == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _passed(cases: list[Case]) -> list[Case]:
    assert cases
    assert all(c.status == "pass" for c in cases), [(c.dst, c.reason) for c in cases]
    return cases


def test_every_node_joins_the_internet_as_eth1_and_keeps_its_cluster_route(
        flannel_vxlan: Running) -> None:
    p, name = flannel_vxlan.provider, flannel_vxlan.name
    net = p.client.networks.get(edge.internet_network(name))
    assert net.attrs["Internal"] is True, "the internet network never routes off this host"
    assert net.attrs["Labels"] == {LABEL_CLUSTER: name, "io.testbed.role": "network"}
    cluster_ips = {n.name: n.ip for n in find(p, name).nodes}
    for node in flannel_vxlan.ctx.nodes:
        assert cluster_ips[node.name] == node.ip, "a node's address stays its cluster one"
        eth1 = p.exec(node.name, ["ip", "-4", "-j", "addr", "show", "eth1"])
        assert eth1.exit_code == 0, eth1.stderr
        assert json.loads(eth1.stdout)[0]["addr_info"][0]["local"] == _internet_ip(
            flannel_vxlan, node.name)
        route = json.loads(p.exec(node.name, ["ip", "-4", "-j", "route", "show", "default"]
                                  ).stdout)
        assert [r["dev"] for r in route] == ["eth0"], "the default route stays on eth0"
    roles = {c.name: c.role for c in p.containers(name)}
    assert roles[edge.outside_name(name)] == "external"
    assert roles[edge.echo_name(name)] == "external"
    assert roles[edge.ingress_name(name)] == "ingress"


def test_pod_to_outside_is_seen_as_its_node_never_the_pod(flannel_vxlan: Running) -> None:
    world = _world(flannel_vxlan)
    cases = _passed(execute(flannel_vxlan.provider,
                            planners.pod_to_outside(flannel_vxlan.provider, world)))
    assert len(cases) == 3, "one pod on each node"
    pod_ips = {p["name"]: str(p["ip"]).split("/")[0]
               for pods in world.pods_by_node.values() for p in pods}
    for case in cases:
        node_ip = _internet_ip(flannel_vxlan, case.src_node)
        assert case.expect_client == node_ip
        assert f"(source {node_ip})" in case.reason
        assert pod_ips[case.src] not in case.reason
    # The same thing without the planner: what the echo server itself saw.
    echo_ip = _internet_ip(flannel_vxlan, edge.echo_name(flannel_vxlan.name))
    node = flannel_vxlan.ctx.nodes[1]
    pod = world.pods_by_node[node.name][0]["name"]
    res = flannel_vxlan.provider.exec(node.name, [
        "python3", "-m", "testbed_node", "probe", pod, f"http://{echo_ip}:{edge.ECHO_PORT}/",
        "--count", "1"])
    body = json.loads(res.stdout)["body"]
    assert body["pod"] == "internet-echo"
    assert body["client"] == _internet_ip(flannel_vxlan, node.name)


def test_outside_reaches_the_ingress_by_host(flannel_vxlan: Running) -> None:
    world = _world(flannel_vxlan)
    cases = _passed(execute(flannel_vxlan.provider,
                            planners.outside_to_ingress(flannel_vxlan.provider, world)))
    by_dst = {c.dst: c for c in cases}
    routed = by_dst["echo.testbed.local/ -> echo:80"]
    assert routed.headers == {"Host": "echo.testbed.local"}
    assert routed.expect_pods and all(p.startswith("echo-") for p in routed.expect_pods)
    assert by_dst[f"{planners.UNKNOWN_HOST}/ -> 404"].status == "pass"
    # nginx goes through the service's ClusterIP, as the service proxy registered it.
    cluster_ip = registry.cluster_ips(flannel_vxlan.provider, flannel_vxlan.name)["echo"]
    routes = planners.edge_facts(world)["routes"]
    assert [(r["via"], r["upstream"]) for r in routes] == [("clusterIP", [f"{cluster_ip}:80"])]
    # Requests spread over the service's pods, on every node, whichever way nginx reaches them.
    edge_ip = _internet_ip(flannel_vxlan, f"{flannel_vxlan.name}-node-1")
    seen = {_outside_get(flannel_vxlan, f"http://{edge_ip}/", "echo.testbed.local"
                         )["body"]["pod"] for _ in range(24)}
    assert seen <= set(routed.expect_pods) and len(seen) >= 2


def test_unknown_host_and_unknown_path_get_404(flannel_vxlan: Running) -> None:
    edge_ip = _internet_ip(flannel_vxlan, f"{flannel_vxlan.name}-node-1")
    for host in ("unknown.testbed.local", "echo.testbed.local.evil", edge_ip):
        res = _outside_get(flannel_vxlan, f"http://{edge_ip}/", host)
        assert res["status"] == 404, (host, res)
    # A known host: the path reaches the backend as-is under "/" (its /healthz answers).
    res = _outside_get(flannel_vxlan, f"http://{edge_ip}/healthz", "echo.testbed.local")
    assert res["status"] == 200 and res["body"] == "ok\n"


def test_ingress_is_published_on_the_hosts_loopback(flannel_vxlan: Running) -> None:
    node1 = flannel_vxlan.provider.client.containers.get(f"{flannel_vxlan.name}-node-1")
    port = int(node1.labels[edge.LABEL_INGRESS_PORT])
    binding = node1.attrs["HostConfig"]["PortBindings"]["80/tcp"][0]
    assert binding == {"HostIp": "127.0.0.1", "HostPort": str(port)}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/",
                                 headers={"Host": "echo.testbed.local"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["pod"].startswith("echo-") and body["container"] == "app"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    assert err.value.code == 404
    doc = json.loads(subprocess.run(
        [sys.executable, "-m", "testbed", "status", flannel_vxlan.name, "--json"],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    assert doc["edge"]["ingress"]["url"] == f"http://127.0.0.1:{port}/"


def test_outside_reaches_every_nodeport_on_every_node(flannel_vxlan: Running) -> None:
    world = _world(flannel_vxlan)
    cases = _passed(execute(flannel_vxlan.provider,
                            planners.outside_to_nodeport(flannel_vxlan.provider, world)))
    nodes = {n.name for n in flannel_vxlan.ctx.nodes}
    assert {c.dst for c in cases} == {f"{n}:30080 (echo)" for n in nodes}
    assert all(c.src_container == edge.outside_name(flannel_vxlan.name) for c in cases)


# A small cluster of its own for path routing: two services on two ports of the same pods,
# told apart by which container answers.
def _paths_scenario() -> Scenario:
    base = load(None).model_dump(by_alias=True, exclude_none=True)
    base.update(
        nodes=1, networkPolicies=[],
        deployments=[{"name": "echo", "replicas": 2, "labels": {"app": "echo"},
                      "containers": [{"name": "app", "port": 8080},
                                     {"name": "sidecar", "port": 8081}]}],
        services=[{"name": "echo", "selector": {"app": "echo"},
                   "ports": [{"port": 80, "targetPort": 8080}]},
                  {"name": "side", "selector": {"app": "echo"},
                   "ports": [{"port": 81, "targetPort": 8081}]}],
        ingress=[{"host": "a.testbed.local", "paths": [{"path": "/", "service": "echo",
                                                        "port": 80},
                                                       {"path": "/side", "service": "side",
                                                        "port": 81}]},
                 {"host": "b.testbed.local", "paths": [{"path": "/", "service": "side",
                                                        "port": 81}]},
                 {"host": "c.testbed.local", "paths": [{"path": "/only", "service": "echo",
                                                        "port": 80}]}],
    )
    return Scenario.model_validate(base)


@pytest.fixture(scope="module")
def edge_paths(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    with start(provider, "ep", "flannel:vxlan", nodes=1, scenario=_paths_scenario()) as running:
        yield running


def test_ingress_routes_by_host_and_path_prefix(edge_paths: Running) -> None:
    edge_ip = _internet_ip(edge_paths, f"{edge_paths.name}-node-1")
    expected = {
        ("a.testbed.local", "/"): "app",
        ("a.testbed.local", "/side"): "sidecar",
        ("a.testbed.local", "/side/"): "sidecar",
        ("b.testbed.local", "/"): "sidecar",
        ("c.testbed.local", "/only"): "app",
    }
    for (host, path), container in expected.items():
        res = _outside_get(edge_paths, f"http://{edge_ip}{path}", host)
        assert res["status"] == 200, (host, path, res)
        assert res["body"]["container"] == container, (host, path, res["body"])
    # Prefix semantics: /sidex is not under /side; c has no rule for "/" at all.
    res = _outside_get(edge_paths, f"http://{edge_ip}/sidex", "a.testbed.local")
    assert res["status"] == 404 and res["body"] == "not found\n", "the app's own 404"
    assert _outside_get(edge_paths, f"http://{edge_ip}/", "c.testbed.local")["status"] == 404
    cases = _passed(execute(edge_paths.provider,
                            planners.outside_to_ingress(edge_paths.provider, _world(edge_paths))))
    assert len(cases) == 4 + 1, "each (host, path) and the unknown host"


def test_failure_after_joining_the_internet_rolls_everything_back(
        provider: DockerProvider, built: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = cluster_name("eb")

    def broken(ctx: create.UpContext) -> None:
        assert provider.client.networks.list(names=[edge.internet_network(ctx.name)])
        raise RuntimeError("injected failure while starting the edge")

    monkeypatch.setattr(edge_up, "start_edge", broken)
    with pytest.raises(Exception, match="injected failure"):
        start(provider, "eb", "flannel:vxlan", nodes=1, scenario=_paths_scenario())
    assert leftovers(provider, name) == []


def test_a_taken_ingress_port_fails_up_in_one_line_and_leaves_nothing(
        provider: DockerProvider, built: dict[str, str], edge_paths: Running,
        monkeypatch: pytest.MonkeyPatch) -> None:
    taken = provider.client.containers.get(f"{edge_paths.name}-node-1").labels[
        edge.LABEL_INGRESS_PORT]
    monkeypatch.setenv(edge.INGRESS_PORT_ENV, taken)
    with pytest.raises(Exception, match=r"cannot start .*node-1"):
        start(provider, "tp", "flannel:vxlan", nodes=1, scenario=_paths_scenario())
    assert leftovers(provider, cluster_name("tp")) == []


def test_down_leaves_no_labelled_network_or_container(edge_paths: Running) -> None:
    res = subprocess.run([sys.executable, "-m", "testbed", "down", edge_paths.name],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert leftovers(edge_paths.provider, edge_paths.name) == []
    assert not edge_paths.provider.client.networks.list(
        names=[edge.internet_network(edge_paths.name)])
