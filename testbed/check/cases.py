"""What the connectivity matrix is made of: cases, the world planners see, and pod helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.cluster.agent import NodeAgent
from testbed.cluster.model import Cluster
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider
from testbed.scenario import Scenario
from testbed_contract.agent import PodRecord, ProbeReply
from testbed_contract.node import HTTP_KINDS

# Every path the matrix checks, in the order reports list them.
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
    runner: Callable[[Provider, Case], ProbeReply] | None = None
    expect_status: int = 0  # every request must get exactly this HTTP status (e.g. 404)


@dataclass
class World:
    """What planners see: the cluster, its pods per node, and facts other modules add."""

    cluster: Cluster
    pods_by_node: dict[str, list[PodRecord]]
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


def http_port(pod: PodRecord, container: str | None = None) -> int | None:
    """The port of a pod's (first, or named) HTTP container."""
    return next((int(c["port"]) for c in pod.get("containers", [])
                 if c.get("kind") in HTTP_KINDS and c["port"] is not None
                 and (container is None or c.get("name") == container)), None)


def inventory(provider: Provider, cluster: Cluster) -> dict[str, list[PodRecord]]:
    """Pods per node, straight from each node's agent."""
    names = [n.name for n in cluster.nodes]
    pods = parallel(lambda n: NodeAgent(provider, n).pods(), names)
    return dict(zip(names, pods, strict=True))


def pod_case(path: str, node: str, src: PodRecord, dst: PodRecord,
             port: int | None = None) -> Case:
    """A case from one pod to another pod's HTTP port."""
    port = port or http_port(dst)
    return Case(path, src["name"], dst["name"], src_node=node, src_pod=src["name"],
                url=f"http://{str(dst['ip']).split('/')[0]}:{port}/", expect_pods=(dst["name"],))
