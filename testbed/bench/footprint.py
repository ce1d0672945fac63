"""CPU and memory of each node and its CNI daemons over a window: idle, or under pod-to-pod load.

The load is a ring across the nodes: vegeta in the first pod of every node sends to the pods
of the next node, all at once, so every node's dataplane and CNI daemon carries traffic both
ways. The counters are the engine's cgroup ones, read before and after the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from testbed.analysis.sweep import Point
from testbed.errors import StepError
from testbed.lifecycle.wait import parallel
from testbed.load import openloop
from testbed.load.locust import Place
from testbed.load.resources import running
from testbed.provider.base import Provider, Usage

T = TypeVar("T")
URLS_PER_TARGET = 5  # pods of the next node each generator cycles through
PORT = 8080


def _read(provider: Provider, name: str) -> dict[str, tuple[str, Usage]]:
    """{container: (role, usage)} of every running node, CNI daemon and datastore."""
    infos = running(provider, name, ("node", "cni", "datastore"))
    return dict(zip([c.name for c in infos],
                    zip([c.role for c in infos], parallel(lambda c: provider.stats(c.name),
                                                          infos), strict=True), strict=True))


def measure(provider: Provider, name: str, work: Callable[[], T]) -> tuple[dict[str, Any], T]:
    """Per node, the memory of the node (its pods included) and of its CNI daemons at the end
    of `work`, and their CPU over it (% of one core); etcd's memory; what `work` returned."""
    first = _read(provider, name)
    t0 = time.monotonic()
    result = work()
    window = time.monotonic() - t0
    last = _read(provider, name)

    def of(role: str) -> list[str]:  # present at the end; CPU only of those also at the start
        return sorted(n for n, (r, _) in last.items() if r == role)

    def cpu_s(names: list[str]) -> float:
        return sum(last[n][1].cpu_s - first[n][1].cpu_s for n in names if n in first)

    def mem(names: list[str]) -> float:
        return round(sum(last[n][1].mem_mib for n in names), 1)

    daemons = of("cni")
    rows = []
    for node in of("node"):
        mine = [d for d in daemons if d.startswith(node + "-")]
        rows.append({"node": node, "node_mem_mib": mem([node]), "cni_mem_mib": mem(mine),
                     "cni_cpu_pct": round(100 * cpu_s(mine) / window, 2),
                     "node_cpu_pct": round(100 * cpu_s([node]) / window, 2)})
    return {"per_node": rows, "window_s": round(window, 1),
            "cni_cpu_s": round(cpu_s(daemons), 3),
            "etcd_mem_mib": mem(of("datastore"))}, result


def idle(provider: Provider, name: str, seconds: float) -> dict[str, Any]:
    """The footprint over `seconds` of no traffic."""
    return measure(provider, name, lambda: time.sleep(seconds))[0]


def ring(pods: Sequence[Mapping[str, Any]]) -> list[openloop.Target]:
    """One generator per node (its first pod), each aimed at up to URLS_PER_TARGET pods of
    the next node (the last node's at the first's)."""
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        if pod.get("ip"):
            by_node.setdefault(str(pod["node"]), []).append(pod)
    nodes = sorted(by_node)
    if len(nodes) < 2:
        return []
    out = []
    for i, node in enumerate(nodes):
        nxt = by_node[nodes[(i + 1) % len(nodes)]][:URLS_PER_TARGET]
        urls = tuple(f"http://{str(p['ip']).split('/')[0]}:{PORT}/" for p in nxt)
        out.append(openloop.Target(Place(node, str(by_node[node][0]["name"])), urls))
    return out


def combine(points: Sequence[Point]) -> dict[str, Any]:
    """The ring's generators as one load: summed rates, the worst p99, the error share over
    every request."""
    requests = sum(p.requests for p in points)
    errors: dict[str, int] = {}
    for p in points:
        for kind, n in p.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    return {"generators": len(points),
            "offered_rps": round(sum(p.offered_rps for p in points), 1),
            "achieved_rps": round(sum(p.achieved_rps for p in points), 1),
            "requests": requests,
            "error_share": (round(sum(p.error_share * p.requests for p in points) / requests, 4)
                            if requests else None),
            "errors": errors,
            "p99_ms_max": max((p.p99_ms for p in points), default=None),
            "generator_bound": any(p.generator_bound for p in points)}


def loaded(provider: Provider, name: str, pods: Sequence[Mapping[str, Any]], rate: float,
           seconds: float) -> dict[str, Any]:
    """The footprint while the ring sends `rate` requests/s in all (split evenly), and what
    the load achieved; CNI daemon CPU-seconds per 1000 requests answered."""
    targets = ring(pods)
    if not targets:
        return {"error": "fewer than two nodes with addressed pods: no ring to load"}
    each = max(1, round(rate / len(targets)))  # vegeta's -rate takes whole requests per second
    try:
        usage, points = measure(provider, name, lambda: parallel(
            lambda t: openloop.attack(provider, "pod-to-pod", t, each, seconds), targets,
            workers=len(targets)))
    except StepError as e:  # the idle figures and the rest of the row stand
        return {"error": str(e)[:600]}
    load = combine(points)
    answered = load["requests"] * (1 - (load["error_share"] or 0))
    usage["cni_cpu_s_per_1000_requests"] = (round(usage["cni_cpu_s"] / answered * 1000, 4)
                                            if answered else None)
    return {**usage, "load": load}
