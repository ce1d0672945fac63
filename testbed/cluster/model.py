"""A cluster as Docker's labels describe it: no local state file (kind keeps state the same way)."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

from testbed.constants import (
    LABEL_BACKEND,
    LABEL_BUILD,
    LABEL_CLUSTER,
    LABEL_CNI,
    LABEL_IMAGES,
)
from testbed.errors import UserError
from testbed.provider.base import ContainerInfo, Provider

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")


def validate_name(name: str) -> str:
    """Cluster names become container names, so keep them DNS-like and short."""
    if not NAME_RE.match(name):
        raise UserError(f"invalid cluster name {name!r}: use 1-24 lowercase letters, digits "
                        "or '-', starting and ending with a letter or digit")
    return name


def node_name(cluster: str, index: int) -> str:
    """`<cluster>-node-<n>`, n from 1."""
    return f"{cluster}-node-{index}"


def cluster_of(node: str) -> str:
    """The cluster a `<cluster>-node-<n>` name belongs to."""
    return node.rsplit("-node-", 1)[0]


def etcd_name(cluster: str) -> str:
    """`<cluster>-etcd`."""
    return f"{cluster}-etcd"


def etcd_address(subnet: str) -> str:
    """etcd's fixed address on the node network: the last host of the subnet (Docker hands
    out the lower half only), so every endpoint is known before any container starts."""
    return str(ipaddress.ip_network(subnet).broadcast_address - 1)


def network_name(cluster: str) -> str:
    """`<cluster>-net`: the bridge network the nodes share."""
    return f"{cluster}-net"


MARKER_ROLE = "marker"


def marker_name(cluster: str) -> str:
    """`<cluster>-complete`: a labelled empty volume `up` creates as its very last act, so a
    cluster whose `up` was killed (or is still running) has none."""
    return f"{cluster}-complete"


def is_complete(provider: Provider, cluster: str) -> bool:
    """Whether `up` finished for this cluster."""
    return marker_name(cluster) in provider.volumes(cluster, MARKER_ROLE)


@dataclass(frozen=True)
class Cluster:
    """What `status` and `check` need, rebuilt from container labels."""

    name: str
    cni: str
    backend: str
    build: str
    images: dict[str, str]
    nodes: list[ContainerInfo]
    containers: list[ContainerInfo]

    @property
    def etcd(self) -> ContainerInfo | None:
        """The datastore container, if any."""
        return next((c for c in self.containers if c.role == "datastore"), None)


def find(provider: Provider, name: str) -> Cluster:
    """Find a cluster again from its labels, or say how to create one."""
    containers = provider.containers(cluster=name)
    nodes = sorted((c for c in containers if c.role == "node"),
                   key=lambda c: int(c.name.rsplit("-", 1)[-1]))
    if not nodes:
        known = ", ".join(provider.clusters()) or "none"
        raise UserError(f"no cluster named {name!r} (clusters: {known}); create one with "
                        "`python -m testbed up`")
    labels = nodes[0].labels
    return Cluster(
        name=labels.get(LABEL_CLUSTER, name), cni=labels.get(LABEL_CNI, ""),
        backend=labels.get(LABEL_BACKEND, ""), build=labels.get(LABEL_BUILD, ""),
        images=json.loads(labels.get(LABEL_IMAGES, "{}")), nodes=nodes, containers=containers,
    )
