"""Planners for the service paths (pod-to-service, pod-to-nodeport, hairpin) and the spread table.

A ClusterIP picks a backend at random per connection, so "a backend on the same node" cannot
be chosen, only observed. Those cases send requests from the source pod through the service
until the wanted kind of backend answered, enough of them that missing it by chance has odds
below one in a million; every request must succeed, so a broken path (say DNAT to a local pod
whose reply is not un-NATed on the bridge) fails the case instead of being retried away.
The registry (services, pods, readiness) is read from etcd, the way kube-proxy sees it.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from testbed.check.cases import Case, World
from testbed.cluster.agent import NodeAgent
from testbed.provider.base import Provider
from testbed.services import registry
from testbed_contract.agent import PodRecord, ProbeReply, ProbeSample
from testbed_contract.node import HTTP_KINDS
from testbed_contract.registry import Endpoint, Registry, Service, ServicePort, selects

MISS_ODDS = 1e-6
MAX_REQUESTS = 200
BATCH = 10
REQUEST_TIMEOUT = 3.0
SPREAD_REQUESTS = 600
SPREAD_SIGMAS = 4.0

Runner = Callable[[Provider, "Case"], ProbeReply]


def registry_of(provider: Provider, world: World) -> Registry:
    """The registry, read once per check and shared through World.facts."""
    if "registry" not in world.facts:
        try:
            world.facts["registry"] = registry.read(provider, world.cluster.name)
        except Exception:  # no etcd or no registry: the planners skip with a reason
            world.facts["registry"] = Registry()
    reg: Registry = world.facts["registry"]
    return reg


def requests_needed(wanted: int, total: int, miss_odds: float = MISS_ODDS) -> int:
    """Requests after which `wanted` of `total` equally likely backends were missed with odds
    below `miss_odds`: the smallest k with (1 - wanted/total)^k < miss_odds."""
    if wanted <= 0 or total <= 0:
        return 0
    if wanted >= total:
        return 1
    return min(MAX_REQUESTS, math.ceil(math.log(miss_odds) / math.log(1 - wanted / total)))


def until_answered(limit: int, batch: int = BATCH) -> Runner:
    """A prober for load-balanced destinations: batches of requests until one of the case's
    expected pods answered, `limit` requests are spent, or any request failed."""

    def run(provider: Provider, case: Case) -> ProbeReply:
        agent = NodeAgent(provider, case.src_node)
        samples: list[ProbeSample] = []
        last: ProbeReply | None = None
        while len(samples) < limit:
            last = agent.probe(case.src_pod or case.src, case.url,
                               min(batch, limit - len(samples)), REQUEST_TIMEOUT)
            samples += last["samples"]
            if not last["ok"] or any(s["pod"] in case.expect_pods for s in samples):
                break
        good = [s for s in samples if s["ok"]]
        hit = next((s for s in good if s["pod"] in case.expect_pods), None)
        chosen = hit or (good[-1] if good else None)
        errors = [s["error"] for s in samples if s["error"]]
        answered = Counter(str(s["pod"]) for s in good)
        times = [s["latency_ms"] for s in good if s["latency_ms"] is not None]
        return {
            "ok": bool(samples) and len(good) == len(samples),
            "status": last["status"] if last else None,
            "body": {"pod": chosen["pod"], "client": chosen["client"]} if chosen else {},
            "latency_ms": statistics.median(times) if times else None,
            "url": case.url,
            "samples": samples, "count": len(samples), "failures": len(samples) - len(good),
            "error": (f"{errors[0]} ({len(errors)} of {len(samples)} requests failed; "
                      f"answered: {dict(answered)})") if errors else "",
        }

    return run


def _http_endpoints(reg: Registry, svc: Service, port: ServicePort) -> list[Endpoint]:
    """Ready endpoints whose target port is a pod's HTTP workload (what the probe can ask)."""
    out = []
    for ep in reg.endpoints(svc, port):
        pod = reg.pods.get(ep.pod)
        if pod and any(c.get("kind") in HTTP_KINDS and c.get("port") == port.target_port
                       for c in pod.containers):
            out.append(ep)
    return out


def _http_ports(reg: Registry) -> list[tuple[Service, ServicePort, list[Endpoint]]]:
    """Service ports that front HTTP workloads, with their ready endpoints."""
    out = []
    for svc in sorted(reg.services.values(), key=lambda s: s.name):
        for port in svc.ports:
            selected = [p for p in reg.selected(svc) if any(
                c.get("kind") in HTTP_KINDS and c.get("port") == port.target_port
                for c in p.containers)]
            if selected:
                out.append((svc, port, _http_endpoints(reg, svc, port)))
    return out


def _source(world: World, node: str, svc: Service, reg: Registry) -> PodRecord | None:
    """A pod on `node` to send from: preferably one the service does not select."""
    pods = [p for p in world.pods_by_node.get(node, []) if p.get("status") == "running"
            and all(c.get("alive", True) for c in p.get("containers", []))]
    outside = [p for p in pods
               if not selects(svc.selector, reg.pods[p["name"]].labels
                              if p["name"] in reg.pods else {})]
    return next(iter(outside or pods), None)


def _url(ip: str, port: int) -> str:
    return f"http://{ip}:{port}/"


def pod_to_service(provider: Provider, world: World) -> list[Case]:
    """From a pod on every node through each HTTP service's ClusterIP, once to a backend on
    the same node and once to a backend on another node."""
    reg = registry_of(provider, world)
    cases: list[Case] = []
    for svc, port, eps in _http_ports(reg):
        target = f"{svc.name} {svc.cluster_ip}:{port.port}"
        if not eps:
            cases.append(Case("pod-to-service", "-", target,
                               reason=f"service {svc.name} has no ready endpoints"))
            continue
        for node in sorted(world.pods_by_node):
            src = _source(world, node, svc, reg)
            if src is None:
                continue
            for where, group in (("same node", [e for e in eps if e.node == node]),
                                 ("other node", [e for e in eps if e.node != node])):
                dst = f"{target} ({where})"
                if not group:
                    cases.append(Case("pod-to-service", src["name"], dst, src_node=node,
                                       reason=f"{svc.name} has no ready backend on "
                                       f"{'' if where == 'same node' else 'a node other than '}"
                                       f"{node}"))
                    continue
                cases.append(Case(
                    "pod-to-service", src["name"], dst, src_node=node, src_pod=src["name"],
                    url=_url(svc.cluster_ip, port.port),
                    expect_pods=tuple(sorted(e.pod for e in group)),
                    runner=until_answered(requests_needed(len(group), len(eps)))))
    return cases


def pod_to_nodeport(provider: Provider, world: World) -> list[Case]:
    """From a pod on every node to the NodePort on its own node and on the next node."""
    reg = registry_of(provider, world)
    nodes = sorted(reg.nodes)
    cases: list[Case] = []
    for svc, port, eps in _http_ports(reg):
        if not port.node_port:
            continue
        backends = tuple(sorted(e.pod for e in eps))
        for i, node in enumerate(nodes):
            src = _source(world, node, svc, reg)
            if src is None:
                continue
            remote = nodes[(i + 1) % len(nodes)]
            for where, to in (("local", node), ("remote", remote)):
                if where == "remote" and remote == node:
                    continue
                dst = f"{to} {reg.nodes[to]}:{port.node_port} ({svc.name}, {where})"
                if not eps:
                    cases.append(Case("pod-to-nodeport", src["name"], dst, src_node=node,
                                       reason=f"service {svc.name} has no ready endpoints"))
                    continue
                cases.append(Case("pod-to-nodeport", src["name"], dst, src_node=node,
                                   src_pod=src["name"],
                                   url=_url(reg.nodes[to], port.node_port),
                                   expect_pods=backends))
    return cases


def hairpin(provider: Provider, world: World) -> list[Case]:
    """A backend on every node reaches its own service until the service picks it (hairpin:
    DNAT back to the sender, masqueraded so the reply returns through the node)."""
    reg = registry_of(provider, world)
    cases: list[Case] = []
    for svc, port, eps in _http_ports(reg):
        target = f"{svc.name} {svc.cluster_ip}:{port.port}"
        for node in sorted({e.node for e in eps}):
            ep = next(e for e in eps if e.node == node)
            cases.append(Case("hairpin", ep.pod, f"{target} -> itself", src_node=node,
                               src_pod=ep.pod, url=_url(svc.cluster_ip, port.port),
                               expect_pods=(ep.pod,),
                               runner=until_answered(requests_needed(1, len(eps)))))
    return cases


PLANNERS = [pod_to_service, pod_to_nodeport, hairpin]


# -- spread --------------------------------------------------------------------------------


def spread_bound(n: int, requests: int, sigmas: float = SPREAD_SIGMAS) -> float:
    """How far one endpoint's share may stray from 1/n: `sigmas` binomial standard deviations,
    sigmas * sqrt(p(1-p)/R) with p = 1/n (4 sigmas: a false alarm per endpoint < 1e-4)."""
    if n <= 0 or requests <= 0:
        return 0.0
    p = 1.0 / n
    return sigmas * math.sqrt(p * (1 - p) / requests)


@dataclass
class Share:
    """One endpoint's part of the requests."""

    pod: str
    node: str
    endpoint: str
    hits: int
    share: float
    expected: float
    bound: float

    @property
    def ok(self) -> bool:
        """Within the bound of the expected share."""
        return abs(self.share - self.expected) <= self.bound


@dataclass
class Spread:
    """Requests through a ClusterIP, counted per endpoint, against kube-proxy's 1/n each."""

    service: str
    url: str
    src: str
    requests: int
    failures: int
    rows: list[Share] = field(default_factory=list)
    strays: dict[str, int] = field(default_factory=dict)
    rule: str = ""

    @property
    def ok(self) -> bool:
        """Every request answered, only by endpoints, and every share within its bound."""
        return (self.failures == 0 and not self.strays and bool(self.rows)
                and all(r.ok for r in self.rows))

    def table(self) -> list[dict[str, Any]]:
        """Rows for a console table or JSON."""
        return [{"pod": r.pod, "node": r.node, "endpoint": r.endpoint, "hits": r.hits,
                 "share": round(r.share, 4), "expected": round(r.expected, 4),
                 "bound": round(r.bound, 4), "ok": r.ok} for r in self.rows]


def spread_table(counts: Mapping[str, int], endpoints: list[Endpoint], failures: int = 0,
                 service: str = "", url: str = "", src: str = "",
                 sigmas: float = SPREAD_SIGMAS) -> Spread:
    """The per-endpoint shares of `counts` (answering pod -> requests) against 1/n."""
    answered = sum(counts.values())
    total = answered + failures
    n = len(endpoints)
    bound = spread_bound(n, total, sigmas)
    rows = [Share(pod=e.pod, node=e.node, endpoint=str(e), hits=counts.get(e.pod, 0),
                  share=counts.get(e.pod, 0) / total if total else 0.0,
                  expected=1.0 / n, bound=bound) for e in endpoints]
    known = {e.pod for e in endpoints}
    strays = {pod: k for pod, k in counts.items() if pod not in known}
    rule = (f"every share within 1/{n} ± {sigmas:g}·sqrt(p(1-p)/R), p = 1/{n}, R = {total}: "
            f"± {bound:.4f}")
    return Spread(service, url, src, total, failures, rows, strays, rule)


def spread(provider: Provider, cluster: str, service: str | None = None,
           requests: int = SPREAD_REQUESTS, src: tuple[str, str] | None = None,
           sigmas: float = SPREAD_SIGMAS) -> Spread:
    """Send `requests` new connections through a service's ClusterIP from one pod (src:
    (node, pod); default: a pod the service does not select) and count who answered."""
    reg = registry.read(provider, cluster)
    ports = _http_ports(reg)
    chosen = next(((s, p, e) for s, p, e in ports if service in (None, s.name)), None)
    if chosen is None:
        known = ", ".join(sorted(reg.services)) or "none"
        raise ValueError(f"no HTTP service {service or ''} in the registry of {cluster} "
                         f"(services: {known})")
    svc, port, eps = chosen
    if src is None:
        src = next(((p.node, p.name) for p in sorted(reg.pods.values(), key=lambda p: p.name)
                    if not selects(svc.selector, p.labels) and reg.ready(p.name)), None)
        if src is None:
            src = (eps[0].node, eps[0].pod)
    url = _url(svc.cluster_ip, port.port)
    res = NodeAgent(provider, src[0]).probe(src[1], url, requests, REQUEST_TIMEOUT)
    samples = res.get("samples", [])
    counts = Counter(str(s.get("pod")) for s in samples if s.get("ok"))
    failures = sum(1 for s in samples if not s.get("ok"))
    return spread_table(counts, eps, failures, svc.name, url, src[1], sigmas)
