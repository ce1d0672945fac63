"""Control-plane recovery after a fault: BGP sessions Established (calico), leases (flannel)."""

from __future__ import annotations

import time

from testbed.cluster.agent import probe_from
from testbed.cluster.etcd import ClusterEtcd
from testbed.cni.calico import BIRD_SOCKET, parse_bird_protocols
from testbed.cni.flannel import ETCD_PREFIX, HEALTHZ_PORT
from testbed.errors import TestbedError
from testbed.faults.facts import Facts
from testbed.faults.spec import Fault
from testbed.provider.base import Provider

WAIT_S = 60.0
INTERVAL_S = 0.5


def bgp_established(facts: Facts) -> bool:
    """Every calico node's BIRD has all its BGP sessions Established (vxlan: felix ready)."""
    for i in facts.nodes:
        node = facts.node(i)
        res = facts.provider.exec(f"{node}-calico-node",
                                  ["birdcl", "-s", BIRD_SOCKET, "show", "protocols"])
        if res.exit_code != 0:
            if facts.cni is not None and facts.cni.ready(facts.provider, node):
                continue  # no BIRD (vxlan backend): felix's readiness is the control plane
            return False
        peers = parse_bird_protocols(res.stdout)
        if not peers or any(p["state"] != "Established" for p in peers):
            return False
    return True


def flannel_leased(facts: Facts) -> bool:
    """Every node has its lease in etcd and its flanneld answers its health check."""
    items, _ = ClusterEtcd(facts.provider, facts.cluster).range(f"{ETCD_PREFIX}/subnets/",
                                                                 keys_only=True)
    if len(items) < len(facts.nodes):
        return False
    for i in facts.nodes:
        reply = probe_from(facts.provider, facts.node(i),
                           f"http://127.0.0.1:{HEALTHZ_PORT}/healthz", timeout=1.0)
        if not reply.get("ok"):
            return False
    return True


def healthy(facts: Facts) -> bool:
    """The cluster's control plane, as its CNI keeps it, is whole again."""
    try:
        if not ClusterEtcd(facts.provider, facts.cluster).healthy():
            return False
        name = facts.cni.name if facts.cni is not None else ""
        if name == "calico":
            return bgp_established(facts)
        if name == "flannel":
            return flannel_leased(facts)
    except TestbedError:
        return False
    return True


def recovered(provider: Provider, cluster: str, fault: Fault, since: float,
              wait_s: float = WAIT_S) -> float | None:
    """Seconds from `since` (a Unix time: the fault's undo) until the control plane is
    whole again; None when it is not within `wait_s`."""
    try:
        facts = Facts.find(provider, cluster)
    except TestbedError:
        return None
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if healthy(facts):
            return round(max(0.0, time.time() - since), 2)
        time.sleep(INTERVAL_S)
    return None
