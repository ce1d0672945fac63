"""A scenario's networks checked together: service, pod and node networks, clusterIPs."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Iterable

from testbed.constants import NODE_SUBNET_POOL

# Per CNI: its default pod CIDR, the block each node gets from it (prefix length) and the
# blocks left unused (flannel leases /24s and skips the first; calico-ipam's blocks are /26).
POD_NETWORKS = {"flannel": ("10.244.0.0/16", 24, 1), "calico": ("192.168.0.0/16", 26, 0),
                "weave": ("10.32.0.0/12", 26, 0)}

def check_networks(service_cidr: str, cni: str, pod_cidr: str | None, nodes: int,
                   cluster_ips: Iterable[tuple[str, str | None]]) -> None:
    """IPv4 service, pod and node networks that do not overlap; room for every node; one
    clusterIP per service (given as (service, clusterIP) pairs), inside serviceCIDR."""
    svc = ipaddress.IPv4Network(service_cidr)
    pool = os.environ.get("TESTBED_SUBNET_POOL", NODE_SUBNET_POOL)
    try:
        nodes_net = ipaddress.IPv4Network(pool)
    except ValueError:
        nodes_net = ipaddress.IPv4Network(NODE_SUBNET_POOL)
    if svc.overlaps(nodes_net):
        raise ValueError(f"serviceCIDR: {svc} overlaps the node networks {nodes_net}; "
                         "allowed: a network outside it, e.g. 10.96.0.0/16")
    default, block, reserved = POD_NETWORKS.get(cni, ("", 24, 1))
    given = pod_cidr or default
    if given:
        pod = ipaddress.IPv4Network(given)
        if svc.overlaps(pod):
            raise ValueError(f"serviceCIDR: {svc} overlaps the pod CIDR {pod} (cni.podCIDR"
                             f"{'' if pod_cidr else ', the CNI default'}); "
                             "allowed: networks that do not overlap")
        if pod.overlaps(nodes_net):
            raise ValueError(f"cni.podCIDR: {pod} overlaps the node networks {nodes_net}; "
                             "allowed: a network outside it, e.g. 10.244.0.0/16")
        widest = block - math.ceil(math.log2(nodes + reserved))
        if pod.prefixlen > widest:
            raise ValueError(f"cni.podCIDR: {pod} is too small for {nodes} nodes with "
                             f"{cni}; allowed: a prefix of /{widest} or shorter")
    seen: dict[str, str] = {}
    for name, ip in cluster_ips:
        if not ip:
            continue
        if ipaddress.IPv4Address(ip) not in svc:
            raise ValueError(f"services.{name}.clusterIP: {ip} is outside "
                             f"serviceCIDR {svc}; allowed: an address inside {svc}")
        if ip in seen:
            raise ValueError(f"services.{name}.clusterIP: {ip} is also "
                             f"{seen[ip]}'s; allowed: one clusterIP per service")
        seen[ip] = name
