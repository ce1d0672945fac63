"""The edge's part of `up`: publish the edge node, attach nodes to the internet, start the edge."""

from __future__ import annotations

import os
import socket

from testbed.cluster import model
from testbed.constants import LABEL_NODE
from testbed.edge import ingress, registry
from testbed.edge.names import (
    ECHO_PORT,
    EDGE_NODE,
    INGRESS_HTTP_PORT,
    INGRESS_PORT_ENV,
    LABEL_EDGE,
    LABEL_INGRESS_PORT,
    echo_name,
    ingress_name,
    internet_network,
    outside_name,
)
from testbed.errors import UserError
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.wait import Http, parallel
from testbed.provider.base import ContainerSpec
from testbed_contract.node import WORKLOAD_MODULE


def host_port() -> int:
    """The host port for the ingress: $TESTBED_INGRESS_PORT, or a free one on 127.0.0.1."""
    raw = os.environ.get(INGRESS_PORT_ENV, "").strip()
    if raw and raw != "0":
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise UserError(f"{INGRESS_PORT_ENV}={raw!r} is not a port: use 1-65535, or 0 "
                            "for a free one")
        return int(raw)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def on_edge_node(index: int, spec: ContainerSpec) -> ContainerSpec:
    """The edge node publishes the ingress on 127.0.0.1 (ports are fixed at create time)."""
    if index == EDGE_NODE:
        port = host_port()
        spec.ports[f"{INGRESS_HTTP_PORT}/tcp"] = ("127.0.0.1", port)
        spec.labels[LABEL_INGRESS_PORT] = str(port)
    return spec


def start_internet(ctx: UpContext) -> None:
    """An internal network is the internet: no route off this host. An outside client and an
    echo server (ready once it answers) live on it; the nodes join it later (`join_internet`)."""
    provider, name = ctx.provider, ctx.name
    net = internet_network(name)
    provider.create_network(net, name, "network", internal=True, avoid=ctx.reserved_cidrs())
    outside = [ContainerSpec(
        name=outside_name(name), image=ctx.tags["node"], cluster=name, role="external",
        network=net, hostname=outside_name(name), labels=ctx.labels(),
        command=["sleep", "infinity"], init=True,
    ), ContainerSpec(
        name=echo_name(name), image=ctx.tags["node"], cluster=name, role="external",
        network=net, hostname=echo_name(name), labels=ctx.labels(), init=True,
        command=["python3", "-m", WORKLOAD_MODULE, "--port", str(ECHO_PORT),
                 "--pod", "internet-echo", "--container", "echo", "--node", echo_name(name)],
        wait=Http(f"http://127.0.0.1:{ECHO_PORT}/healthz",
                  "the internet echo server to answer"),
    )]
    parallel(provider.run, outside)


def join_internet(ctx: UpContext, node: str) -> None:
    """A node joins the internet as eth1, once its CNI has settled on eth0."""
    ctx.provider.connect(node, internet_network(ctx.name))


def start_edge(ctx: UpContext) -> None:
    """The ingress on the edge node, ready once it answers there (404: no Host matched)."""
    provider, name = ctx.provider, ctx.name
    edge = model.node_name(name, EDGE_NODE)
    all_routes = ingress.routes(ctx.scenario, registry.cluster_ips(provider, name),
                                ingress.endpoints(ctx.scenario, ctx.pods))
    port = next(c for c in provider.containers(name, "node") if c.name == edge
                ).labels.get(LABEL_INGRESS_PORT, "")
    provider.run(ContainerSpec(
        name=ingress_name(name), image=ctx.tags["ingress"], cluster=name, role="ingress",
        network_mode=f"container:{edge}",
        env={"INGRESS_NGINX_CONF": ingress.render(all_routes)},
        labels={**ctx.labels(), LABEL_NODE: edge, LABEL_INGRESS_PORT: port,
                LABEL_EDGE: ingress.describe(all_routes, ctx.scenario)},
        # nginx's default server answers 404 when no Host matched: the ingress is up
        wait=Http(f"http://127.0.0.1:{INGRESS_HTTP_PORT}/", f"the ingress on {edge} to answer",
                  where=edge, status=404),
    ))
