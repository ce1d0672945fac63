"""The connectivity matrix: planners propose cases for a cluster; cases run from pods or hosts."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.check import edge, services
from testbed.cluster.agent import NodeAgent
from testbed.cluster.model import Cluster
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider
from testbed.scenario import Scenario
from testbed_contract.node import PROBE_MODULE
from testbed_contract.registry import SCENARIO_KEY

PROBE_COUNT = 3
PROBE_TIMEOUT = 3.0
PATHS = ("container-to-container", "pod-to-pod-same-node", "pod-to-pod-cross-node",
         "pod-to-service", "pod-to-nodeport", "outside-to-nodeport", "outside-to-ingress",
         "pod-to-outside", "hairpin", "policy-allow", "policy-deny")


@dataclass
class Case:
    """One source -> destination check: where it runs, what it asks, what it must see."""

    path: str
    src: str
    dst: str
    status: str = "skip"
    reason: str = ""
    latency_ms: float = 0.0
    url: str = ""
    # Where the probe runs: a pod on a node, or else directly in a container (outside client).
    src_node: str = ""
    src_pod: str = ""
    src_container: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # What passing means: the answering pod is one of these (empty: any), the source address
    # the server saw equals `expect_client` (SNAT), or the request must NOT get through.
    expect_pods: tuple[str, ...] = ()
    expect_client: str = ""
    expect_blocked: bool = False
    # How to probe when not the default PROBE_COUNT requests (e.g. until a backend answers).
    runner: Callable[[Provider, Case], dict[str, Any]] | None = None
    expect_status: int = 0  # every request must get exactly this HTTP status (e.g. 404)


@dataclass
class World:
    """What planners see: the cluster, its pods per node, and facts other modules add."""

    cluster: Cluster
    pods_by_node: dict[str, list[dict[str, Any]]]
    facts: dict[str, Any] = field(default_factory=dict)
    scenario: Scenario | None = None

    def labels(self, pod: str) -> dict[str, str]:
        """A pod's labels, from the scenario the cluster was made from."""
        if self.scenario is None:
            return {}
        return next((d.pod_labels for name, _, d in self.scenario.pods() if name == pod), {})

    def guarded(self, pod: str) -> bool:
        """Whether a network policy selects this pod (plain pod-to-pod cases avoid it)."""
        labels = self.labels(pod)
        return self.scenario is not None and any(
            all(labels.get(k) == v for k, v in pol.pod_selector.match_labels.items())
            for pol in self.scenario.network_policies)


Planner = Callable[[Provider, World], list[Case]]


def http_port(pod: dict[str, Any], container: str | None = None) -> int | None:
    """The port of a pod's (first, or named) HTTP container."""
    return next((int(c["port"]) for c in pod.get("containers", [])
                 if c.get("kind") == "http" and c.get("port")
                 and (container is None or c.get("name") == container)), None)


def inventory(provider: Provider, cluster: Cluster) -> dict[str, list[dict[str, Any]]]:
    """Pods per node, straight from each node's agent."""
    names = [n.name for n in cluster.nodes]
    pods = parallel(lambda n: NodeAgent(provider, n).pods(), names)
    return dict(zip(names, pods, strict=True))


def pod_case(path: str, node: str, src: dict[str, Any], dst: dict[str, Any],
             port: int | None = None) -> Case:
    """A case from one pod to another pod's HTTP port."""
    port = port or http_port(dst)
    return Case(path, src["name"], dst["name"], src_node=node, src_pod=src["name"],
                url=f"http://{str(dst['ip']).split('/')[0]}:{port}/", expect_pods=(dst["name"],))


def pod_to_pod(provider: Provider, world: World) -> list[Case]:
    """Pod-to-pod on the same node, and across every ordered pair of nodes."""
    servers = {n: [p for p in pods if http_port(p) and not world.guarded(p["name"])]
               for n, pods in world.pods_by_node.items()}
    cases: list[Case] = []
    for node, pods in servers.items():
        if len(pods) >= 2:
            cases.append(pod_case("pod-to-pod-same-node", node, pods[0], pods[1]))
        else:
            cases.append(Case("pod-to-pod-same-node", pods[0]["name"] if pods else node, "",
                              reason=f"fewer than two serving pods on {node}"))
    for a, pods_a in servers.items():
        for b, pods_b in servers.items():
            if a != b and pods_a and pods_b:
                cases.append(pod_case("pod-to-pod-cross-node", a, pods_a[0], pods_b[-1]))
    return cases


def container_to_container(provider: Provider, world: World) -> list[Case]:
    """Two containers of one pod talk over localhost (they share the pod's netns)."""
    for node, pods in world.pods_by_node.items():
        for pod in pods:
            https = [c for c in pod.get("containers", []) if c.get("kind") == "http"]
            if len(https) >= 2:
                other = https[1]
                return [Case("container-to-container", f"{pod['name']}/{https[0]['name']}",
                             f"{pod['name']}/{other['name']}", src_node=node,
                             src_pod=pod["name"],
                             url=f"http://127.0.0.1:{other['port']}/",
                             expect_pods=(pod["name"],))]
    return [Case("container-to-container", "-", "-",
                 reason="no pod in the scenario has two HTTP containers")]


PLANNERS: list[Planner] = [container_to_container, pod_to_pod, *services.PLANNERS,
                           *edge.PLANNERS]


def stored_scenario(provider: Provider, cluster: Cluster) -> Scenario | None:
    """The scenario `up` recorded in etcd (None for clusters made without one)."""
    if cluster.etcd is None:
        return None
    res = provider.exec(cluster.etcd.name, ["etcdctl", "get", SCENARIO_KEY,
                                            "--print-value-only"])
    if res.exit_code != 0 or not res.stdout.strip():
        return None
    return Scenario.model_validate_json(res.stdout.strip())


def plan(provider: Provider, world: World) -> list[Case]:
    """Every planner's cases, in the order of DESIGN.md's path list."""
    from testbed.check import policy

    cases = [c for planner in [*PLANNERS, *policy.PLANNERS] for c in planner(provider, world)]
    return sorted(cases, key=lambda c: PATHS.index(c.path) if c.path in PATHS else len(PATHS))


def _probe(provider: Provider, case: Case) -> dict[str, Any]:
    if case.src_node:
        res: dict[str, Any] = NodeAgent(provider, case.src_node).probe(
            case.src_pod or case.src, case.url, PROBE_COUNT, PROBE_TIMEOUT, headers=case.headers)
        return res
    argv = ["python3", "-m", PROBE_MODULE, case.url, "--count", str(PROBE_COUNT),
            "--timeout", str(PROBE_TIMEOUT)]
    for k, v in case.headers.items():
        argv += ["--header", f"{k}: {v}"]
    out = provider.exec(case.src_container, argv)
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


def judge(case: Case, res: dict[str, Any]) -> Case:
    """Decide pass/fail from a probe's answer and the case's expectations."""
    raw = res.get("body")
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    case.latency_ms = round(float(res.get("latency_ms") or 0.0), 3)
    if case.expect_blocked:
        if res.get("failures") == res.get("count") and not res.get("ok"):
            case.status, case.reason = "pass", f"{case.url} dropped as the policy requires"
        else:
            case.status = "fail"
            case.reason = f"{case.url} answered ({body.get('pod')}) but policy should deny"
        return case
    if case.expect_status:
        got = sorted({s.get("status") for s in res.get("samples", [])}, key=str)
        times = sorted(s["latency_ms"] for s in res.get("samples", []) if s.get("latency_ms"))
        case.latency_ms = round(float(times[len(times) // 2]), 3) if times else 0.0
        if got == [case.expect_status]:
            case.status, case.reason = "pass", f"{case.url} answered {case.expect_status}"
        else:
            case.status = "fail"
            case.reason = (f"{case.url} answered {got} ({res.get('error')}), expected "
                           f"{case.expect_status}")
        return case
    if not res.get("ok"):
        case.status = "fail"
        case.reason = f"{case.url}: {res.get('error') or 'status ' + str(res.get('status'))}"
    elif case.expect_pods and body.get("pod") not in case.expect_pods:
        case.status = "fail"
        case.reason = (f"{case.url} answered as {body.get('pod')!r}, expected "
                       f"{' or '.join(case.expect_pods)}")
    elif case.expect_client and body.get("client") != case.expect_client:
        case.status = "fail"
        case.reason = (f"{case.url} saw source {body.get('client')}, expected "
                       f"{case.expect_client}")
    else:
        seen = f" (source {body.get('client')})" if case.expect_client else ""
        case.status, case.reason = "pass", f"{case.url} -> {body.get('pod')}{seen}"
    return case


def execute(provider: Provider, cases: list[Case]) -> list[Case]:
    """Run every planned case (in parallel); skipped cases stay skipped."""

    def one(case: Case) -> Case:
        if not case.url:
            return case
        try:
            return judge(case, (case.runner or _probe)(provider, case))
        except Exception as e:  # an agent failure is this case's failure, not the run's
            case.status, case.reason = "fail", f"{type(e).__name__}: {e}"
            return case

    return parallel(one, cases, workers=6)


def run(provider: Provider, cluster: Cluster) -> list[Case]:
    """Plan and execute the whole matrix for a cluster."""
    world = World(cluster, inventory(provider, cluster),
                  scenario=stored_scenario(provider, cluster))
    return execute(provider, plan(provider, world))


def report(cluster: Cluster, cases: list[Case]) -> dict[str, Any]:
    """`check --json`'s document (DESIGN.md's stable keys)."""
    keys = ("path", "src", "dst", "status", "reason", "latency_ms")
    return {
        "cluster": cluster.name, "cni": cluster.cni, "backend": cluster.backend,
        "build": cluster.build,
        "cases": [{k: v for k, v in asdict(c).items() if k in keys} for c in cases],
    }
