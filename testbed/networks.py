"""A scenario's networks checked together: service, pod and node networks, clusterIPs."""

from __future__ import annotations

import ipaddress
import math
import os
from typing import TYPE_CHECKING

from testbed.constants import NODE_SUBNET_POOL

# The block each node gets from the pod CIDR (prefix length) and the blocks left unused.
PER_NODE_BLOCK = {"flannel": (24, 1), "calico": (26, 0), "weave": (26, 0)}

if TYPE_CHECKING:
    from testbed.scenario import Scenario


def check_networks(scenario: Scenario) -> None:
    """IPv4 service, pod and node networks that do not overlap; room for every node; one
    clusterIP per service, inside serviceCIDR."""
    svc = ipaddress.IPv4Network(scenario.service_cidr)
    pool = os.environ.get("TESTBED_SUBNET_POOL", NODE_SUBNET_POOL)
    try:
        nodes_net = ipaddress.IPv4Network(pool)
    except ValueError:
        nodes_net = ipaddress.IPv4Network(NODE_SUBNET_POOL)
    if svc.overlaps(nodes_net):
        raise ValueError(f"serviceCIDR: {svc} overlaps the node networks {nodes_net}; "
                         "allowed: a network outside it, e.g. 10.96.0.0/16")
    from testbed.cni import REGISTRY  # here: calico's module imports the scenario's models

    module = REGISTRY.get(scenario.cni.name)
    given = scenario.cni.pod_cidr or (module.default_pod_cidr if module else "")
    if given:
        pod = ipaddress.IPv4Network(given)
        if svc.overlaps(pod):
            raise ValueError(f"serviceCIDR: {svc} overlaps the pod CIDR {pod} (cni.podCIDR"
                             f"{'' if scenario.cni.pod_cidr else ', the CNI default'}); "
                             "allowed: networks that do not overlap")
        if pod.overlaps(nodes_net):
            raise ValueError(f"cni.podCIDR: {pod} overlaps the node networks {nodes_net}; "
                             "allowed: a network outside it, e.g. 10.244.0.0/16")
        # a block per node: flannel leases a /24 and leaves the first unused; calico-ipam and
        # weave hand out smaller blocks (/26 is calico's)
        block, reserved = PER_NODE_BLOCK.get(scenario.cni.name, (24, 1))
        widest = block - math.ceil(math.log2(scenario.nodes + reserved))
        if pod.prefixlen > widest:
            raise ValueError(f"cni.podCIDR: {pod} is too small for {scenario.nodes} nodes with "
                             f"{scenario.cni.name}; allowed: a prefix of /{widest} or shorter")
    seen: dict[str, str] = {}
    for s in scenario.services:
        if not s.cluster_ip:
            continue
        if ipaddress.IPv4Address(s.cluster_ip) not in svc:
            raise ValueError(f"services.{s.name}.clusterIP: {s.cluster_ip} is outside "
                             f"serviceCIDR {svc}; allowed: an address inside {svc}")
        if s.cluster_ip in seen:
            raise ValueError(f"services.{s.name}.clusterIP: {s.cluster_ip} is also "
                             f"{seen[s.cluster_ip]}'s; allowed: one clusterIP per service")
        seen[s.cluster_ip] = s.name
