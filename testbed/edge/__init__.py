"""The cluster's edge: an "internet" network, the ingress controller, an outside client, egress."""

from __future__ import annotations

from testbed.edge.names import (
    ECHO_PORT,
    EDGE_NODE,
    INGRESS_PORT_ENV,
    LABEL_EDGE,
    LABEL_INGRESS_PORT,
    echo_name,
    ingress_name,
    internet_network,
    outside_name,
)

__all__ = ["ECHO_PORT", "EDGE_NODE", "INGRESS_PORT_ENV", "LABEL_EDGE", "LABEL_INGRESS_PORT",
           "echo_name", "ingress_name", "internet_network", "outside_name"]
