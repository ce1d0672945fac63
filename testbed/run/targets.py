"""Where each path's load comes from and goes to, derived from the running cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.errors import StepError
from testbed.load import iperf
from testbed.load.locust import LocustPhase, Place, Profile
from testbed.provider.base import Provider
from testbed.scenario import Scenario
from testbed_contract.node import WORKLOAD_MODULE

NODE_SERVER_PORT = 18080
CLIENT_LABEL = ("role", "client")


def pods(provider: Provider, cluster: str) -> dict[str, dict[str, Any]]:
    """Every pod of the cluster by name, with its node container and bare IP."""
    out = {}
    for node in model.find(provider, cluster).nodes:
        for pod in NodeAgent(provider, node.name).pods():
            out[pod["name"]] = {**pod, "node_container": node.name,
                                "ip": str(pod.get("ip", "")).split("/")[0]}
    return out


def _clients(scenario: Scenario, pods: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    k, v = CLIENT_LABEL
    names = [name for name, _, dep in scenario.pods() if dep.pod_labels.get(k) == v]
    found = [pods[n] for n in names if n in pods]
    if not found:
        raise StepError("the scenario has no client pods (a deployment labelled role: client) "
                        "to run Locust in")
    return found


def service(provider: Provider, cluster: str, name: str) -> dict[str, Any]:
    """A service as the registry in etcd holds it (ClusterIP, ports)."""
    from testbed.services import registry

    found: dict[str, Any] = registry.read_service(provider, cluster, name)
    return found


def node_ips(provider: Provider, cluster: str) -> list[str]:
    """Every node's address on the cluster network."""
    return [n.ip for n in model.find(provider, cluster).nodes if n.ip]


def edge(provider: Provider, cluster: str) -> dict[str, Any]:
    """The edge node's internet address (where the ingress listens) and the outside client."""
    from testbed.edge.names import EDGE_NODE, internet_network, outside_name

    node = next(n for n in model.find(provider, cluster).nodes
                if n.name == model.node_name(cluster, EDGE_NODE))
    ip = node.ips.get(internet_network(cluster))
    if not ip:
        raise StepError(f"{node.name} is not on {internet_network(cluster)}: no ingress path")
    return {"ingress_ip": ip, "outside": outside_name(cluster)}


def client_pods(provider: Provider, cluster: str, scenario: Scenario
                ) -> list[dict[str, Any]]:
    """The scenario's client pods as running (ip, node container)."""
    return _clients(scenario, pods(provider, cluster))


def first_service_port(scenario: Scenario) -> tuple[str, int, int | None]:
    svc = next((s for s in scenario.services if s.selector.get("app") == "echo"),
               scenario.services[0] if scenario.services else None)
    if svc is None:
        raise StepError("the scenario has no service to load")
    return svc.name, svc.ports[0].port, svc.ports[0].node_port


def http_target(provider: Provider, cluster: str, scenario: Scenario, path: str
                ) -> dict[str, Any]:
    """The URLs (and headers) of a path's HTTP load, as Locust and vegeta both use them."""
    svc_name, port, node_port = first_service_port(scenario)
    if path == "pod-to-service":
        ip = service(provider, cluster, svc_name)["cluster_ip"]
        return {"urls": [f"http://{ip}:{port}/"]}
    if path == "nodeport":
        if node_port is None:
            raise StepError(f"service {svc_name} has no nodePort to load")
        return {"urls": [f"http://{ip}:{node_port}/" for ip in node_ips(provider, cluster)]}
    if path == "ingress":
        facts = edge(provider, cluster)
        rule = scenario.ingress[0]
        return {"urls": [f"http://{facts['ingress_ip']}:80{rule.paths[0].path}"],
                "headers": {"Host": rule.host}}
    if path == "container-to-container":
        return {"urls": ["http://127.0.0.1:8080/"]}
    raise StepError(f"unknown load path {path!r}")


def generator_place(provider: Provider, cluster: str, scenario: Scenario, path: str) -> Place:
    """Where a single-process generator for `path` runs: the outside client for ingress, else
    a client pod on another node than the first (where Locust's workers run)."""
    if path == "ingress":
        return Place(edge(provider, cluster)["outside"])
    clients = client_pods(provider, cluster, scenario)
    first = clients[0]["node_container"]
    c = next((c for c in clients if c["node_container"] != first), clients[0])
    return Place(c["node_container"], c["name"])


def phase(provider: Provider, cluster: str, scenario: Scenario, path: str,
          profile: Profile) -> LocustPhase:
    """The master, workers and targets of one path's Locust phase."""
    found = pods(provider, cluster)
    clients = _clients(scenario, found)
    master = clients[0]
    master_place = Place(master["node_container"], master["name"])
    others = [c for c in clients[1:] if c["node_container"] != master["node_container"]] \
        or clients[1:] or clients
    count = scenario.load.workers
    workers = [Place(c["node_container"], c["name"]) for c in (others * count)[:count]]
    if path == "node-to-node":
        nodes = model.find(provider, cluster).nodes
        server, client = nodes[min(1, len(nodes) - 1)], nodes[-1]
        provider.spawn(server.name, ["python3", "-m", WORKLOAD_MODULE, "--port",
                                     str(NODE_SERVER_PORT), "--pod", f"{server.name}-host"])
        targets = {path: {"urls": [f"http://{server.ip}:{NODE_SERVER_PORT}/"]}}
        head = nodes[0]
        return LocustPhase(provider, path, Place(head.name), head.ip or "",
                           [Place(client.name)] * count, targets, profile)
    targets = {path: http_target(provider, cluster, scenario, path)}
    if path == "ingress":
        outside = edge(provider, cluster)["outside"]
        return LocustPhase(provider, path, Place(outside), "127.0.0.1",
                           [Place(outside)] * count, targets, profile)
    return LocustPhase(provider, path, master_place, master["ip"], workers, targets, profile)


def throughput(provider: Provider, cluster: str, scenario: Scenario, seconds: int = iperf.SECONDS
               ) -> list[tuple[str, Callable[[], list[iperf.Throughput]]]]:
    """iperf3 from a client pod on another node to the iperf pod, direct and via its service:
    (path, measurement) pairs, so each can be metered on its own."""
    found = pods(provider, cluster)
    servers = [p for p in found.values() if str(p["name"]).startswith("iperf-")]
    if not servers:
        return []
    server = servers[0]
    every_client = _clients(scenario, found)
    clients = [c for c in every_client
               if c["node_container"] != server["node_container"]] or every_client
    node, pod = clients[0]["node_container"], clients[0]["name"]
    mtu = iperf.mtu_of(provider, node, pod)
    out = [("pod-to-pod-cross-node", lambda: iperf.measure(
        provider, node, pod, "pod-to-pod-cross-node", server["ip"], mtu,
        seconds=seconds))]
    svc = next((s for s in scenario.services if s.selector.get("app") == "iperf"), None)
    if svc is not None:
        ip = service(provider, cluster, svc.name)["cluster_ip"]
        # The service declares TCP only (as the scenario schema does), so no UDP through it.
        out.append(("pod-to-service", lambda: iperf.measure(
            provider, node, pod, "pod-to-service", ip, mtu, udp=False,
            seconds=seconds)))
    return out


def node_throughput(provider: Provider, cluster: str, seconds: int = iperf.SECONDS
                    ) -> list[iperf.Throughput]:
    """iperf3 node-to-node over the host network (no CNI on the path): the 1.0 of the ratios."""
    nodes = model.find(provider, cluster).nodes
    if len(nodes) < 2:
        return []
    server, client = nodes[1], nodes[-1] if len(nodes) > 2 else nodes[0]
    # started once per cluster: a later trial's second server fails to bind, the first serves
    provider.spawn(server.name, ["iperf3", "-s", "-p", str(iperf.NODE_PORT)])
    time.sleep(0.5)
    mtu = iperf.mtu_of_node(provider, client.name, str(server.ip))
    return iperf.measure(provider, client.name, None, "node-to-node", str(server.ip), mtu,
                         port=iperf.NODE_PORT, seconds=seconds)
