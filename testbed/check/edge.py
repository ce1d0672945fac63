"""Planners for the edge paths: outside-to-nodeport, outside-to-ingress, pod-to-outside (SNAT).

Everything they need is read back from Docker (labels and addresses of the cluster's
containers), never from local state, and kept in `World.facts` for the other planners.
"""

from __future__ import annotations

import json
import re
from typing import Any

from testbed.check.cases import Case, World
from testbed.edge import names as edge
from testbed.edge import registry
from testbed.provider.base import Provider

# A Host no rule names: the ingress's default server must answer 404 (RFC 2606 name).
UNKNOWN_HOST = "unknown.testbed.invalid"


def edge_facts(world: World) -> dict[str, Any]:
    """The edge as Docker shows it: internet addresses, echo server, ingress port and routes."""
    if "edge" in world.facts:
        return dict(world.facts["edge"])
    cluster = world.cluster
    net = edge.internet_network(cluster.name)
    by_name = {c.name: c for c in cluster.containers}
    outside = by_name.get(edge.outside_name(cluster.name))
    echo = by_name.get(edge.echo_name(cluster.name))
    ingress = by_name.get(edge.ingress_name(cluster.name))
    described = json.loads(ingress.labels.get(edge.LABEL_EDGE, "{}")) if ingress else {}
    edge_node = next((n for n in cluster.nodes if n.name.endswith(f"-node-{edge.EDGE_NODE}")), None)
    facts: dict[str, Any] = {
        "internet_ips": {n.name: n.ips[net] for n in cluster.nodes if net in n.ips},
        "echo_ip": echo.ips.get(net, "") if echo and echo.status == "running" else "",
        "echo_port": edge.ECHO_PORT,
        "outside": outside.name if outside and outside.status == "running" else "",
        "ingress_node": edge_node.name if edge_node else "",
        "ingress_running": bool(ingress and ingress.status == "running"),
        "ingress_port": int(edge_node.labels.get(edge.LABEL_INGRESS_PORT) or 0) if edge_node else 0,
        "routes": described.get("routes", []),
        "services": described.get("services", {}),
    }
    world.facts["edge"] = facts
    world.facts.update({k: facts[k] for k in ("internet_ips", "echo_ip", "ingress_port",
                                              "outside")})
    return facts


def backend_pods(world: World, deployments: list[str]) -> tuple[str, ...]:
    """Running pods of these deployments (pods are named <deployment>-<n>)."""
    pattern = re.compile(rf"^({'|'.join(map(re.escape, deployments))})-\d+$")
    return tuple(sorted(p["name"] for pods in world.pods_by_node.values() for p in pods
                        if deployments and pattern.match(p["name"])))


def _no_edge(path: str, facts: dict[str, Any]) -> Case | None:
    if not facts["outside"]:
        return Case(path, "outside", "-", reason="no outside client container is running "
                     "(a cluster created without the edge?)")
    return None


def outside_to_nodeport(provider: Provider, world: World) -> list[Case]:
    """The outside client reaches every NodePort on every node's internet address."""
    facts = edge_facts(world)
    missing = _no_edge("outside-to-nodeport", facts)
    if missing:
        return [missing]
    cases: list[Case] = []
    registered = registry.cluster_ips(provider, world.cluster.name)
    if not registered:
        return []  # no service proxy in this cluster at all: no NodePort exists to check
    for svc, info in sorted(facts["services"].items()):
        pods = backend_pods(world, info["deployments"])
        for node_port in info["nodePorts"]:
            for node, ip in sorted(facts["internet_ips"].items()):
                dst = f"{node}:{node_port} ({svc})"
                why = ("" if svc in registered else f"service {svc} is not registered with "
                       "the service proxy (no /testbed/services/ record in etcd)")
                why = why or ("" if pods else f"service {svc} has no running pods")
                if why:
                    cases.append(Case("outside-to-nodeport", facts["outside"], dst,
                                       reason=why))
                    continue
                cases.append(Case("outside-to-nodeport", facts["outside"], dst,
                                   src_container=facts["outside"],
                                   url=f"http://{ip}:{node_port}/", expect_pods=pods))
    return cases or [Case("outside-to-nodeport", facts["outside"], "-",
                           reason="the scenario has no NodePort service")]


def outside_to_ingress(provider: Provider, world: World) -> list[Case]:
    """By Host and path through the ingress on the edge node; an unknown Host gets 404."""
    facts = edge_facts(world)
    missing = _no_edge("outside-to-ingress", facts)
    if missing:
        return [missing]
    edge_ip = facts["internet_ips"].get(facts["ingress_node"], "")
    if not facts["ingress_running"] or not edge_ip:
        return [Case("outside-to-ingress", facts["outside"], "-",
                      reason=f"no ingress running on {facts['ingress_node'] or 'an edge node'}")]
    base = f"http://{edge_ip}:{edge.INGRESS_HTTP_PORT}"
    cases: list[Case] = []
    for r in facts["routes"]:
        dst = f"{r['host']}{r['path']} -> {r['service']}:{r['port']}"
        pods = backend_pods(world, facts["services"].get(r["service"], {}).get("deployments",
                                                                                []))
        if not pods:
            cases.append(Case("outside-to-ingress", facts["outside"], dst,
                               reason=f"service {r['service']} has no running pods"))
            continue
        cases.append(Case("outside-to-ingress", facts["outside"], dst,
                           src_container=facts["outside"], url=f"{base}{r['path']}",
                           headers={"Host": r["host"]}, expect_pods=pods))
    cases.append(Case("outside-to-ingress", facts["outside"], f"{UNKNOWN_HOST}/ -> 404",
                       src_container=facts["outside"], url=f"{base}/",
                       headers={"Host": UNKNOWN_HOST}, expect_status=404))
    return cases


def pod_to_outside(provider: Provider, world: World) -> list[Case]:
    """A pod on each node reaches the internet echo server, seen as its node (SNAT)."""
    facts = edge_facts(world)
    if not facts["echo_ip"]:
        return [Case("pod-to-outside", "-", "internet-echo",
                      reason="no internet echo server is running (a cluster created without "
                      "the edge?)")]
    dst = f"internet-echo {facts['echo_ip']}"
    cases: list[Case] = []
    for node, pods in sorted(world.pods_by_node.items()):
        node_ip = facts["internet_ips"].get(node, "")
        if not pods or not node_ip:
            why = "no pods" if not pods else "no address on the internet network"
            cases.append(Case("pod-to-outside", node, dst, reason=f"{node} has {why}"))
            continue
        pod = pods[0]["name"]
        cases.append(Case("pod-to-outside", pod, dst, src_node=node, src_pod=pod,
                           url=f"http://{facts['echo_ip']}:{facts['echo_port']}/",
                           expect_client=node_ip))
    return cases


PLANNERS = [outside_to_nodeport, outside_to_ingress, pod_to_outside]
