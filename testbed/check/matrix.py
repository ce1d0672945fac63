"""The connectivity matrix: which cases exist for a cluster, and running them from pods."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from testbed.cluster.agent import NodeAgent
from testbed.cluster.model import Cluster
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider

PROBE_COUNT = 3
PROBE_TIMEOUT = 3.0


@dataclass
class Case:
    """One source -> destination check, with its outcome."""

    path: str
    src: str
    dst: str
    status: str = "skip"
    reason: str = ""
    latency_ms: float = 0.0
    src_node: str = ""
    url: str = ""
    expect: str = ""


def inventory(provider: Provider, cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """Pods per node, straight from each node's agent."""
    names = [n.name for n in cluster.nodes]
    pods = parallel(lambda n: NodeAgent(provider, n).pods(), names)
    return dict(zip(names, pods, strict=True))


def _http_port(pod: dict[str, Any]) -> int | None:
    return next((int(c["port"]) for c in pod.get("containers", [])
                 if c.get("kind") == "http" and c.get("port")), None)


def plan(pods_by_node: dict[str, list[dict[str, Any]]]) -> list[Case]:
    """Pod-to-pod on the same node, and across every ordered pair of nodes."""
    servers = {n: [p for p in pods if _http_port(p)] for n, pods in pods_by_node.items()}
    cases: list[Case] = []
    for node, pods in servers.items():
        if len(pods) >= 2:
            cases.append(_case("pod-to-pod-same-node", node, pods[0], pods[1]))
        else:
            cases.append(Case("pod-to-pod-same-node", pods[0]["name"] if pods else node, "",
                              reason=f"fewer than two serving pods on {node}"))
    for a, pods_a in servers.items():
        for b, pods_b in servers.items():
            if a != b and pods_a and pods_b:
                cases.append(_case("pod-to-pod-cross-node", a, pods_a[0], pods_b[-1]))
    return cases


def _case(path: str, node: str, src: dict[str, Any], dst: dict[str, Any]) -> Case:
    return Case(path, src["name"], dst["name"], src_node=node,
                url=f"http://{dst['ip']}:{_http_port(dst)}/", expect=dst["name"])


def execute(provider: Provider, cases: list[Case]) -> list[Case]:
    """Run every planned case (in parallel) from inside its source pod."""

    def one(case: Case) -> Case:
        if not case.url:
            return case
        try:
            res = NodeAgent(provider, case.src_node).probe(
                case.src, case.url, PROBE_COUNT, PROBE_TIMEOUT)
        except Exception as e:  # an agent failure is this case's failure, not the run's
            case.status, case.reason = "fail", str(e)
            return case
        raw = res.get("body")
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if not res.get("ok"):
            case.status = "fail"
            case.reason = f"{case.url}: {res.get('error') or 'status ' + str(res.get('status'))}"
        elif body.get("pod") != case.expect:
            case.status = "fail"
            case.reason = f"{case.url} answered as {body.get('pod')!r}, expected {case.expect!r}"
        else:
            case.status, case.reason = "pass", f"{case.url} -> {body.get('node')}"
        case.latency_ms = round(float(res.get("latency_ms") or 0.0), 3)
        return case

    return parallel(one, cases, workers=6)


def report(cluster: Cluster, cases: list[Case]) -> dict[str, Any]:
    """`check --json`'s document (DESIGN.md's stable keys)."""
    keys = ("path", "src", "dst", "status", "reason", "latency_ms")
    return {
        "cluster": cluster.name, "cni": cluster.cni, "backend": cluster.backend,
        "build": cluster.build,
        "cases": [{k: v for k, v in asdict(c).items() if k in keys} for c in cases],
    }
