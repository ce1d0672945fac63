"""Planners for the pod paths: container-to-container and pod-to-pod on one node and across."""

from __future__ import annotations

from testbed.check.cases import Case, Planner, World, http_port, pod_case
from testbed.provider.base import Provider
from testbed_contract.node import HTTP_KINDS


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
            https = [c for c in pod.get("containers", []) if c.get("kind") in HTTP_KINDS]
            if len(https) >= 2:
                other = https[1]
                return [Case("container-to-container", f"{pod['name']}/{https[0]['name']}",
                             f"{pod['name']}/{other['name']}", src_node=node,
                             src_pod=pod["name"],
                             url=f"http://127.0.0.1:{other['port']}/",
                             expect_pods=(pod["name"],))]
    return [Case("container-to-container", "-", "-",
                 reason="no pod in the scenario has two HTTP containers")]


PLANNERS: list[Planner] = [container_to_container, pod_to_pod]
