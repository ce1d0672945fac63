"""The one place the edge reads the service proxy's registry in etcd (ClusterIPs it allocated)."""

from __future__ import annotations

from testbed.errors import TestbedError
from testbed.provider.base import Provider
from testbed.services import registry
from testbed_contract.registry import SERVICES

SERVICES_PREFIX = SERVICES


def cluster_ips(provider: Provider, cluster: str) -> dict[str, str]:
    """Service name -> ClusterIP, as the service proxy registered them; {} when it has none.

    With no registry (no etcd, or a cluster without the service proxy) the ingress routes to
    the ready endpoints instead, and `check` has no NodePort to try from outside.
    """
    try:
        services = registry.read(provider, cluster).services
    except TestbedError:
        return {}
    return {name: svc.cluster_ip for name, svc in services.items() if svc.cluster_ip}
