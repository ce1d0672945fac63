"""The edge's Docker-side contract: predictable names, ports and the labels state lives in."""

from __future__ import annotations

# The edge node: it runs the ingress controller on its host network and publishes port 80.
EDGE_NODE = 1
INGRESS_HTTP_PORT = 80
ECHO_PORT = 8080
# Host port for the ingress (127.0.0.1:<port>); unset or 0 picks a free one.
INGRESS_PORT_ENV = "TESTBED_INGRESS_PORT"

# On the edge node and the ingress container: the host port the ingress is published on.
LABEL_INGRESS_PORT = "io.testbed.ingress.port"
# On the ingress container: the rendered routes and what each service selects (JSON).
LABEL_EDGE = "io.testbed.edge"


def internet_network(cluster: str) -> str:
    """`<cluster>-internet`: the outside world, every node's second interface (eth1)."""
    return f"{cluster}-internet"


def outside_name(cluster: str) -> str:
    """`<cluster>-outside`: a client on the internet network, off the cluster."""
    return f"{cluster}-outside"


def echo_name(cluster: str) -> str:
    """`<cluster>-internet-echo`: a server on the internet that reports who called it."""
    return f"{cluster}-internet-echo"


def ingress_name(cluster: str) -> str:
    """`<cluster>-ingress`: nginx sharing the edge node's network namespace."""
    return f"{cluster}-ingress"
