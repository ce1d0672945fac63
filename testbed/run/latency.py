"""RR and CRR latency per path of a running cluster, with the same-run floors beside them."""

from __future__ import annotations

import time
from typing import Any

from testbed.cluster import model
from testbed.edge.names import EDGE_NODE
from testbed.errors import StepError
from testbed.load import latency
from testbed.load.latency import Latency
from testbed.provider.base import Provider
from testbed.run import targets
from testbed.scenario import Scenario

NODE_RR_PORT = 11112  # a sockperf server in a node's own network namespace (no CNI)
ECHO_PORT = 8080


def _first(pods: list[dict[str, Any]], prefix: str, node: str | None = None,
           not_node: str | None = None) -> dict[str, Any] | None:
    return next((p for p in pods if str(p["name"]).startswith(prefix)
                 and (node is None or p["node_container"] == node)
                 and (not_node is None or p["node_container"] != not_node)), None)


def _service_ip(provider: Provider, cluster: str, scenario: Scenario, app: str) -> str | None:
    svc = next((s for s in scenario.services if s.selector.get("app") == app), None)
    if svc is None:
        return None
    return str(targets.service(provider, cluster, svc.name)["cluster_ip"])


def measure(provider: Provider, cluster: str, scenario: Scenario,
            seconds: int = latency.SECONDS) -> list[Latency]:
    """Loopback, node-to-node, pod-to-pod (same node, across nodes) and pod-to-service, each
    as RR (sockperf to the iperf pod's server) and CRR (wrk to an echo pod's nginx)."""
    pods = list(targets.pods(provider, cluster).values())
    server = _first(pods, "iperf-")
    if server is None:
        raise StepError("latency needs the scenario's iperf pod (it runs the sockperf server)")
    home = server["node_container"]
    same = _first(pods, "client-", node=home)
    cross = _first(pods, "client-", not_node=home)
    echo = _first(pods, "echo-", node=home)
    nodes = model.find(provider, cluster).nodes
    other = next((n for n in nodes if n.name != home), None)
    rr, crr = latency.rr, latency.crr
    out = [rr(provider, home, server["name"], "loopback", "127.0.0.1", seconds=seconds)]
    if echo is not None:
        out.append(crr(provider, home, echo["name"], "loopback",
                       f"http://127.0.0.1:{ECHO_PORT}/", seconds))
    if other is not None and other.ip:
        home_ip = next(n.ip for n in nodes if n.name == home)
        # left running with the node: a later trial's second server just fails to bind
        provider.spawn(home, ["sockperf", "server", "--tcp", "-i", "0.0.0.0", "-p",
                              str(NODE_RR_PORT)])
        time.sleep(0.5)
        out.append(rr(provider, other.name, None, "node-to-node", str(home_ip), NODE_RR_PORT,
                      seconds))
        edge = model.node_name(cluster, EDGE_NODE)
        if scenario.edge and scenario.ingress and other.name != edge:
            # the ingress's nginx answers on the edge node's host network (404, no CNI)
            edge_ip = next((n.ip for n in nodes if n.name == edge), None)
            if edge_ip:
                out.append(crr(provider, other.name, None, "node-to-node",
                               f"http://{edge_ip}:80/", seconds))
    for path, client in (("pod-to-pod-same-node", same), ("pod-to-pod-cross-node", cross)):
        if client is None:
            continue
        out.append(rr(provider, client["node_container"], client["name"], path, server["ip"],
                      seconds=seconds))
        if echo is not None:
            out.append(crr(provider, client["node_container"], client["name"], path,
                           f"http://{echo['ip']}:{ECHO_PORT}/", seconds))
    client = cross or same
    rr_ip = _service_ip(provider, cluster, scenario, "iperf")
    echo_ip = _service_ip(provider, cluster, scenario, "echo")
    if client is not None and rr_ip:
        out.append(rr(provider, client["node_container"], client["name"], "pod-to-service",
                      rr_ip, seconds=seconds))
    if client is not None and echo_ip:
        port = next(s for s in scenario.services if s.selector.get("app") == "echo").ports[0]
        out.append(crr(provider, client["node_container"], client["name"], "pod-to-service",
                       f"http://{echo_ip}:{port.port}/", seconds))
    return out
