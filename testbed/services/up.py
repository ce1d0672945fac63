"""`up`'s "Programming services" step: the registry written, a daemon per node, rules in place."""

from __future__ import annotations

import time

from testbed import console
from testbed.cluster.agent import NodeAgent
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.wait import TIMEOUTS, parallel, until
from testbed.services import registry
from testbed.services.allocate import allocate
from testbed.services.rules import NodeRules
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
    """Publish services and pods to etcd, start every node's daemon, then wait for all their
    rules under one deadline (`up` runs this step only when the scenario has services)."""
    services = allocate(ctx.scenario)
    labels = {pod: dep.pod_labels for pod, _, dep in ctx.scenario.pods()}
    pods = [registry.pod_record(p, labels.get(str(p["name"]), {})) for p in ctx.pods]
    config = {"clusterCIDR": cluster_cidr(ctx), "serviceCIDR": ctx.scenario.service_cidr,
              "nodes": {n.name: n.ip for n in ctx.nodes}}
    registry.publish(ctx.provider, ctx.name, config, services, pods)
    want = expected_endpoints(services, pods)
    nodes = [n.name for n in ctx.nodes]
    env = {"ETCD_ENDPOINTS": ctx.ref.etcd_endpoint}
    began = time.monotonic()
    # Every daemon before any wait: a node's rules list the pods of every node, and only a
    # pod's own daemon marks it ready (a wait per node inside a pool of 8 starts never
    # started the daemons of nodes 9 and up, so nodes 1-8 waited for them until the timeout).
    # The starts themselves are independent, and mostly CPU: the pool's 8 at a time is enough.
    parallel(lambda node: NodeAgent(ctx.provider, node).call("daemon", "start", env=env),
             nodes)
    started = time.monotonic() - began
    rules = NodeRules(ctx.provider, nodes, want, pods)
    waited = until(rules.poll, TIMEOUTS.services,
                   f"the service rules on every node ({len(nodes)})", rules.report,
                   interval=0.2)
    total = sum(len(v) for v in want.values())
    console.progress(f"{len(nodes)} daemons started in {started:.1f}s; rules with {total} "
                     f"endpoints on every node {waited:.1f}s later")
