"""Services on real Docker: kube-proxy's chains in every node, the service paths, spread, and
endpoints that follow pods being deleted or failing readiness within a bounded time."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Running, run_cli

from testbed.check.services import spread
from testbed.cluster.agent import NodeAgent
from testbed.lifecycle.wait import parallel
from testbed.services import registry
from testbed_contract.registry import Registry, status_key

pytestmark = pytest.mark.docker

CONVERGE_BOUND_S = 10.0  # readiness: 3 failed probes at 1 s + one watch + one restore
SERVICE_PATHS = ("pod-to-service", "pod-to-nodeport", "hairpin")


def nat(running: Running, node: str) -> str:
    res = running.provider.exec(node, ["iptables-save", "-t", "nat"])
    assert res.exit_code == 0, res.stderr
    return res.stdout


def chain(save: str, name: str) -> list[str]:
    return [ln for ln in save.splitlines() if ln.startswith(f"-A {name} ")]


def target(rule: str) -> str:
    return rule.split(" -j ")[-1].split()[0]


def grab(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, (pattern, text)
    return m.group(1)


def echo_endpoints(reg: Registry) -> set[str]:
    svc = reg.services["echo"]
    return {str(e) for e in reg.endpoints(svc, svc.ports[0])}


def endpoints_in_rules(running: Running) -> dict[str, set[str]]:
    """Per node: the DNAT destinations of the echo service's chain right now."""
    reg = registry.read(running.provider, running.name)
    ip = reg.services["echo"].cluster_ip

    def one(node: str) -> set[str]:
        save = nat(running, node)
        svc = next((target(r) for r in chain(save, "KUBE-SERVICES") if f"-d {ip}/32" in r), None)
        if svc is None:  # between two rule writes: no chain for the service yet
            return set()
        seps = [chain(save, target(r)) for r in chain(save, svc) if "KUBE-SEP-" in r]
        return {grab(r"--to-destination (\S+)", sep[-1]) for sep in seps if sep}

    nodes = [n.name for n in running.ctx.nodes]
    return dict(zip(nodes, parallel(one, nodes), strict=True))


def wait_rules(running: Running, done: Any, timeout: float) -> float:
    """Seconds until `done(endpoints per node)` holds on every node (polling iptables-save)."""
    start = time.monotonic()
    while True:
        if done(endpoints_in_rules(running)):
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, "rules did not converge in time"
        time.sleep(0.2)


def client(running: Running) -> tuple[str, str]:
    """(node, pod) of a client pod (the service does not select it)."""
    reg = registry.read(running.provider, running.name)
    pod = next(p for p in sorted(reg.pods.values(), key=lambda p: p.name)
               if p.labels.get("role") == "client")
    return pod.node, pod.name


def through_service(running: Running, count: int = 30) -> dict[str, Any]:
    node, pod = client(running)
    ip = registry.read(running.provider, running.name).services["echo"].cluster_ip
    res: dict[str, Any] = NodeAgent(running.provider, node).probe(
        pod, f"http://{ip}:80/", count, 3)
    return res


@pytest.fixture(scope="module")
def checked(flannel_vxlan: Running) -> list[dict[str, Any]]:
    res = run_cli("check", flannel_vxlan.name, "--json")
    doc = json.loads(res.stdout)
    cases: list[dict[str, Any]] = doc["cases"]
    return cases


def test_every_node_has_kube_proxys_chains(flannel_vxlan: Running) -> None:
    reg = registry.read(flannel_vxlan.provider, flannel_vxlan.name)
    svc = reg.services["echo"]
    assert svc.cluster_ip == "10.96.0.10" and svc.ports[0].node_port == 30080
    want = echo_endpoints(reg)
    assert len(want) == 6
    for node in flannel_vxlan.ctx.nodes:
        save = nat(flannel_vxlan, node.name)
        assert any(target(r) == "KUBE-SERVICES" for r in chain(save, "PREROUTING"))
        assert any(target(r) == "KUBE-SERVICES" for r in chain(save, "OUTPUT"))
        assert any(target(r) == "KUBE-POSTROUTING" for r in chain(save, "POSTROUTING"))
        services = chain(save, "KUBE-SERVICES")
        assert "--dst-type LOCAL" in services[-1] and target(services[-1]) == "KUBE-NODEPORTS"
        entry = next(r for r in services if "-d 10.96.0.10/32" in r and "--dport 80" in r)
        svc_chain = target(entry)
        assert svc_chain.startswith("KUBE-SVC-")
        rules = chain(save, svc_chain)
        assert "! -s 10.244.0.0/16" in rules[0] and target(rules[0]) == "KUBE-MARK-MASQ"
        jumps = rules[1:]
        odds = [float(m.group(1)) if (m := re.search(r"--probability (\S+)", r)) else None
                for r in jumps]
        # The kernel keeps the probability as a 31-bit fraction: 1/6 reads 0.16666666651.
        assert [round(p, 6) if p else None for p in odds] == [
            round(1 / k, 6) for k in (6, 5, 4, 3, 2)] + [None]
        dnat = set()
        for sep in map(target, jumps):
            sep_rules = chain(save, sep)
            ip = grab(r"-s (\S+)/32", sep_rules[0])
            assert target(sep_rules[0]) == "KUBE-MARK-MASQ"
            dest = grab(r"--to-destination (\S+)", sep_rules[1])
            assert dest.split(":")[0] == ip
            dnat.add(dest)
        assert dnat == want, node.name
        nodeport = next(r for r in chain(save, "KUBE-NODEPORTS") if "--dport 30080" in r)
        ext = chain(save, target(nodeport))
        assert [target(r) for r in ext] == ["KUBE-MARK-MASQ", svc_chain]
        assert chain(save, "KUBE-MARK-MASQ") == [
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"]
    agent = NodeAgent(flannel_vxlan.provider, flannel_vxlan.ctx.nodes[0].name)
    again = agent.call("daemon", "start")
    assert again["started"] is False and again["running"] is True, "start is idempotent"


@pytest.mark.parametrize("path", SERVICE_PATHS)
def test_service_paths_pass(checked: list[dict[str, Any]], path: str) -> None:
    cases = [c for c in checked if c["path"] == path]
    want = {"pod-to-service": 6, "pod-to-nodeport": 6, "hairpin": 3}[path]
    assert len(cases) == want, cases
    assert all(c["status"] == "pass" for c in cases), cases
    if path == "pod-to-service":
        assert {c["dst"].rsplit("(", 1)[-1] for c in cases} == {"same node)", "other node)"}
    if path == "hairpin":
        assert all(c["src"] in c["reason"] for c in cases), "the pod answered itself"


def test_requests_spread_over_every_endpoint_within_the_bound(flannel_vxlan: Running) -> None:
    result = spread(flannel_vxlan.provider, flannel_vxlan.name, "echo", requests=600)
    print(f"\nspread through {result.url} from {result.src}: {result.rule}")
    for row in result.table():
        print(f"  {row['pod']:8} {row['node']:24} {row['hits']:4} {row['share']:.4f} "
              f"(1/n {row['expected']:.4f} ± {row['bound']:.4f}) {'ok' if row['ok'] else 'OUT'}")
    assert result.failures == 0 and not result.strays
    assert len(result.rows) == 6 and all(r.hits > 0 for r in result.rows)
    assert result.ok, result.table()


def _restore(running: Running, node: str, name: str) -> None:
    """Put a deleted/broken echo pod back (same name, labels) so later tests see 6 again."""
    reg = registry.read(running.provider, running.name)
    if name in reg.pods and all(len(v) == 6 for v in endpoints_in_rules(running).values()):
        return  # it recovered by itself
    agent = NodeAgent(running.provider, node)
    agent.pod_del(name)
    pod = agent.pod_add(name, ["app=http:8080", "sidecar=http:8081"])
    registry.register_pod(running.provider, running.name,
                          registry.pod_record(pod, {"app": "echo"}))
    wait_rules(running, lambda eps: all(len(v) == 6 for v in eps.values()), 30)


@pytest.fixture
def echo_victim(flannel_vxlan: Running) -> Iterator[tuple[str, str, str]]:
    """(node, pod, ip:port) of an echo backend the test may break; restored afterwards."""
    reg = registry.read(flannel_vxlan.provider, flannel_vxlan.name)
    svc = reg.services["echo"]
    ep = reg.endpoints(svc, svc.ports[0])[-1]
    yield ep.node, ep.pod, str(ep)
    _restore(flannel_vxlan, ep.node, ep.pod)


def test_deleting_a_backend_drops_its_endpoint_and_the_service_keeps_working(
        flannel_vxlan: Running, echo_victim: tuple[str, str, str]) -> None:
    node, pod, endpoint = echo_victim
    assert all(endpoint in eps for eps in endpoints_in_rules(flannel_vxlan).values())
    began = time.monotonic()
    NodeAgent(flannel_vxlan.provider, node).pod_del(pod)
    deleted = time.monotonic() - began
    converged = wait_rules(flannel_vxlan,
                           lambda eps: all(endpoint not in v and len(v) == 5
                                           for v in eps.values()), CONVERGE_BOUND_S)
    print(f"\n{pod} deleted in {deleted:.2f}s; its endpoint left every node's rules "
          f"{converged:.2f}s later ({deleted + converged:.2f}s from the delete call)")
    reg = registry.read(flannel_vxlan.provider, flannel_vxlan.name)
    assert pod not in reg.pods and pod not in reg.status, "the node removed it from etcd"
    res = through_service(flannel_vxlan)
    answered = {s["pod"] for s in res["samples"]}
    assert res["ok"] and pod not in answered, res
    assert converged < CONVERGE_BOUND_S


def test_a_pod_failing_readiness_leaves_the_endpoints_and_returns(
        flannel_vxlan: Running, echo_victim: tuple[str, str, str]) -> None:
    node, pod, endpoint = echo_victim
    p = flannel_vxlan.provider
    record = NodeAgent(p, node).call("pod", "show", pod)
    app = next(c for c in record["containers"] if c["name"] == "app")
    # A stopped server still accepts connections in the kernel but never answers: the
    # readiness probe times out (not a dead process), so this is failureThreshold at work.
    # nginx answers from its worker, so the master and its workers are stopped.
    workers = p.exec(node, ["cat", f"/proc/{app['pid']}/task/{app['pid']}/children"]).stdout
    pids = [str(app["pid"]), *workers.split()]
    assert len(pids) > 1, "nginx's master has no worker"
    assert p.exec(node, ["kill", "-STOP", *pids]).exit_code == 0
    try:
        gone = wait_rules(flannel_vxlan, lambda eps: all(endpoint not in v
                                                         for v in eps.values()),
                          CONVERGE_BOUND_S)
        status = json.loads(p.exec(f"{flannel_vxlan.name}-etcd", [
            "etcdctl", "get", status_key(pod), "--print-value-only"]).stdout)
        assert status["ready"] is False and "app" in status["reason"], status
        res = through_service(flannel_vxlan)
        assert res["ok"] and pod not in {s["pod"] for s in res["samples"]}, res
    finally:
        p.exec(node, ["kill", "-CONT", *pids])
    back = wait_rules(flannel_vxlan, lambda eps: all(endpoint in v for v in eps.values()),
                      CONVERGE_BOUND_S)
    print(f"\n{pod} failed readiness: out of every node's rules after {gone:.2f}s, "
          f"back {back:.2f}s after it answered again")
    assert gone < CONVERGE_BOUND_S and back < CONVERGE_BOUND_S
