"""`up`'s "Programming services" step: the registry written, a daemon per node, rules in place."""

from __future__ import annotations

import json
from typing import Any

from testbed.cluster.agent import NodeAgent
from testbed.errors import ProviderError
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.wait import TIMEOUTS, parallel, until
from testbed.services import registry
from testbed.services.allocate import allocate
from testbed_contract.node import DAEMON_LOG_FILE as DAEMON_LOG
from testbed_contract.node import DAEMON_STATUS_FILE as DAEMON_STATUS
from testbed_contract.registry import Pod, Service, selects


def cluster_cidr(ctx: UpContext) -> str:
    """The pod network kube-proxy calls --cluster-cidr: the scenario's, else the CNI's default."""
    return ctx.scenario.cni.pod_cidr or ctx.cni.default_pod_cidr


def expected_endpoints(services: list[Service], pods: list[Pod]) -> dict[str, list[str]]:
    """Service port name -> ip:targetPort of every selected pod (all of them ready)."""
    out: dict[str, list[str]] = {}
    for svc in services:
        chosen = [p for p in pods if p.ip and selects(svc.selector, p.labels)]
        for port in svc.ports:
            out[svc.port_name(port)] = sorted(f"{p.ip}:{port.target_port}" for p in chosen)
    return out


def program_services(ctx: UpContext) -> None:
    """Publish services and pods to etcd, start each node's daemon, wait for its rules
    (`up` runs this step only when the scenario has services)."""
    services = allocate(ctx.scenario)
    labels = {pod: dep.pod_labels for pod, _, dep in ctx.scenario.pods()}
    pods = [registry.pod_record(p, labels.get(str(p["name"]), {})) for p in ctx.pods]
    config = {"clusterCIDR": cluster_cidr(ctx), "serviceCIDR": ctx.scenario.service_cidr,
              "nodes": {n.name: n.ip for n in ctx.nodes}}
    registry.publish(ctx.provider, ctx.name, config, services, pods)
    want = expected_endpoints(services, pods)

    def converge(node: str) -> None:
        NodeAgent(ctx.provider, node).call(
            "daemon", "start", env={"ETCD_ENDPOINTS": ctx.ref.etcd_endpoint})
        last: dict[str, Any] = {}

        def synced() -> bool:
            nonlocal last
            # The status file the daemon rewrites after every look (cheaper than the agent).
            try:
                last = json.loads(ctx.provider.read_file(node, DAEMON_STATUS))
            except (ProviderError, ValueError):
                last = {}
            got = {k: sorted(v) for k, v in (last.get("services") or {}).items()}
            return got == want

        def logs() -> str:
            try:
                tail = "\n".join(ctx.provider.read_file(node, DAEMON_LOG).splitlines()[-20:])
            except ProviderError as e:
                tail = str(e)
            return f"last status: {last}\n{tail}"

        until(synced, TIMEOUTS.services, f"the service rules on {node}", logs, interval=0.2)

    parallel(converge, [n.name for n in ctx.nodes])
