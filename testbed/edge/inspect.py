"""The edge as `status` shows it, read back from the cluster's container labels and addresses."""

from __future__ import annotations

from typing import Any

from testbed.cluster.model import Cluster
from testbed.constants import LABEL_NODE
from testbed.edge.names import (
    LABEL_INGRESS_PORT,
    echo_name,
    ingress_name,
    internet_network,
    outside_name,
)


def status(cluster: Cluster) -> dict[str, Any] | None:
    """Ingress (state, host URL), internet addresses of the nodes, outside client, echo server."""
    by_name = {c.name: c for c in cluster.containers}
    ingress = by_name.get(ingress_name(cluster.name))
    if ingress is None:
        return None
    net = internet_network(cluster.name)
    port = ingress.labels.get(LABEL_INGRESS_PORT, "")

    def entry(name: str) -> dict[str, Any] | None:
        c = by_name.get(name)
        return {"name": c.name, "state": c.status, "ip": c.ips.get(net)} if c else None

    return {
        "network": net,
        "ingress": {"name": ingress.name, "state": ingress.status,
                    "node": ingress.labels.get(LABEL_NODE, ""),
                    "url": f"http://127.0.0.1:{port}/" if port else None},
        "nodes": {n.name: n.ips.get(net) for n in cluster.nodes},
        "outside": entry(outside_name(cluster.name)),
        "echo": entry(echo_name(cluster.name)),
    }
