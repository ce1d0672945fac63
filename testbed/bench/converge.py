"""Control-plane convergence of a cluster: every node knows every other node's pod network.

Calico BGP: each node's BIRD has an Established session to each of the n-1 others (the full
mesh: n(n-1)/2 sessions) and a route to every other node's IPAM block. Calico VXLAN: the
routes. Flannel: one lease per node in etcd, and on every node a route to each other node's
lease (vxlan also a forwarding-table entry on flannel.1 for each other node's VTEP).
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

from testbed.cluster.etcd import ClusterEtcd
from testbed.cni.calico import BIRD_SOCKET, parse_bird_protocols
from testbed.cni.flannel import ETCD_PREFIX
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider


def _routes(provider: Provider, node: str) -> list[dict[str, Any]]:
    res = provider.exec(node, ["ip", "-j", "route", "show"])
    return json.loads(res.stdout or "[]") if res.exit_code == 0 else []


def _covered(routes: list[dict[str, Any]], cidr: str) -> bool:
    net = ipaddress.IPv4Network(cidr, strict=False)
    for r in routes:
        dst = r.get("dst", "")
        if dst and dst != "default" and "/" not in dst:
            dst += "/32"
        try:
            if dst and dst != "default" and net.subnet_of(ipaddress.IPv4Network(dst)):
                return r.get("type") not in ("blackhole", "unreachable")
        except (ValueError, TypeError):
            continue
    return False


def flannel_state(provider: Provider, cluster: str, nodes: dict[str, str], backend: str
                  ) -> dict[str, Any]:
    """Leases in etcd; per node, routes (and vxlan FDB entries) towards every other lease."""
    items, _ = ClusterEtcd(provider, cluster).range(f"{ETCD_PREFIX}/subnets/")
    leases = {k.rsplit("/", 1)[1].replace("-", "/"): json.loads(v) for k, v in items}

    def one(node: str) -> dict[str, Any]:
        own = [c for c, lease in leases.items() if lease.get("PublicIP") == nodes[node]]
        others = [c for c in leases if c not in own]
        routes = _routes(provider, node)
        missing = [c for c in others if not _covered(routes, c)]
        fdb = 0
        if backend == "vxlan":
            res = provider.exec(node, ["bridge", "-j", "fdb", "show", "dev", "flannel.1"])
            rows = json.loads(res.stdout or "[]") if res.exit_code == 0 else []
            fdb = len({r.get("dst") for r in rows if r.get("dst")})
        return {"node": node, "routes_missing": len(missing), "fdb": fdb}

    per_node = parallel(one, list(nodes), workers=10)
    n = len(nodes)
    done = len(leases) == n and all(
        p["routes_missing"] == 0 and (backend != "vxlan" or p["fdb"] >= n - 1)
        for p in per_node)
    return {"converged": done, "leases": len(leases),
            "routes_missing": sum(p["routes_missing"] for p in per_node),
            "fdb_entries": sum(p["fdb"] for p in per_node)}


def calico_state(provider: Provider, cluster: str, nodes: dict[str, str], backend: str
                 ) -> dict[str, Any]:
    """Per node: Established BGP sessions (bgp) and routes to every other node's block."""
    prefix = "/calico/ipam/v2/host/"
    items, _ = ClusterEtcd(provider, cluster).range(prefix, keys_only=True)
    blocks: dict[str, list[str]] = {}
    for key, _ in items:
        host, _, rest = key[len(prefix):].partition("/ipv4/block/")
        if rest:
            blocks.setdefault(host, []).append(rest.replace("-", "/", 1))

    def one(node: str) -> dict[str, Any]:
        est = 0
        if backend == "bgp":
            res = provider.exec(f"{node}-calico-node",
                                ["birdcl", "-s", BIRD_SOCKET, "show", "protocols"])
            if res.exit_code == 0:
                est = sum(p["state"] == "Established" for p in parse_bird_protocols(res.stdout))
        routes = _routes(provider, node)
        missing = [b for h, bs in blocks.items() if h != node for b in bs
                   if not _covered(routes, b)]
        return {"node": node, "established": est, "routes_missing": len(missing)}

    per_node = parallel(one, list(nodes), workers=10)
    n = len(nodes)
    done = (len(blocks) == n and all(p["routes_missing"] == 0 for p in per_node)
            and (backend != "bgp" or all(p["established"] == n - 1 for p in per_node)))
    return {"converged": done, "blocks_hosts": len(blocks),
            "routes_missing": sum(p["routes_missing"] for p in per_node),
            "bgp_established": sum(p["established"] for p in per_node),
            "bgp_expected": n * (n - 1) if backend == "bgp" else 0}


def state(provider: Provider, cni: str, cluster: str, nodes: dict[str, str], backend: str
          ) -> dict[str, Any]:
    """The CNI's control-plane state over every node (`nodes`: name -> address)."""
    fn = calico_state if cni == "calico" else flannel_state
    return fn(provider, cluster, nodes, backend)


def wait(provider: Provider, cni: str, cluster: str, nodes: dict[str, str], backend: str,
         timeout: float = 180.0) -> tuple[float | None, dict[str, Any]]:
    """Seconds until converged (None on timeout) and the last state seen."""
    start = time.monotonic()
    last: dict[str, Any] = {}
    while time.monotonic() - start < timeout:
        try:
            last = state(provider, cni, cluster, nodes, backend)
        except Exception as e:  # a daemon still starting: its socket or etcd not there yet
            last = {"converged": False, "error": f"{type(e).__name__}: {e}"}
        if last.get("converged"):
            return time.monotonic() - start, last
        time.sleep(0.5)
    return None, last
