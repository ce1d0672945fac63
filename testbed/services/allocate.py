"""ClusterIPs and NodePorts for a scenario's services, allocated deterministically.

ClusterIPs come from serviceCIDR starting at its 10th address (the low ones stay free, as
kubeadm keeps .1 for the kubernetes service and .10 conventionally goes to DNS: here the
first scenario service gets .10); explicit clusterIPs are honoured and never handed out
twice. NodePorts are explicit or the lowest free port of 30000-32767, so the same scenario
always gets the same addresses and ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from testbed.errors import UserError
from testbed.scenario import NODEPORT_RANGE, Scenario
from testbed_contract.registry import Service, ServicePort

FIRST_HOST = 10


def _addresses(cidr: str) -> Iterator[str]:
    net = ipaddress.ip_network(cidr)
    first = int(net.network_address) + FIRST_HOST
    last = int(net.broadcast_address) - 1
    for value in range(first, last + 1):
        yield str(ipaddress.ip_address(value))


def allocate(scenario: Scenario) -> list[Service]:
    """Every scenario service with its ClusterIP and NodePorts decided."""
    taken_ips = {s.cluster_ip for s in scenario.services if s.cluster_ip}
    taken_ports = {p.node_port for s in scenario.services for p in s.ports if p.node_port}
    free_ips = (ip for ip in _addresses(scenario.service_cidr) if ip not in taken_ips)
    lo, hi = NODEPORT_RANGE
    free_ports = (p for p in range(lo, hi + 1) if p not in taken_ports)
    out: list[Service] = []
    for svc in scenario.services:
        ip = svc.cluster_ip or next(free_ips, None)
        if ip is None:
            raise UserError(f"service {svc.name}: serviceCIDR {scenario.service_cidr} has no "
                            "free ClusterIP left")
        ports: list[ServicePort] = []
        for p in svc.ports:
            node_port = p.node_port or 0
            if svc.type == "NodePort" and not node_port:
                node_port = next(free_ports, 0)
                if not node_port:
                    raise UserError(f"service {svc.name}: no free nodePort left in {lo}-{hi}")
            # Kubernetes names every port of a multi-port service; unnamed ones get the number.
            name = p.name or ("" if len(svc.ports) == 1 else str(p.port))
            ports.append(ServicePort(port=p.port, target_port=p.target, name=name,
                                     node_port=node_port, protocol=p.protocol))
        out.append(Service(name=svc.name, cluster_ip=ip, selector=dict(svc.selector),
                           ports=tuple(ports), type=svc.type))
    return out
