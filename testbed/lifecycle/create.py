"""`up`: the cluster lifecycle as a flat list of steps, rolled back as one on failure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from testbed import console, images
from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.cni import ClusterRef, Cni, NodeRef
from testbed.constants import (
    CNI_CONF_DIR,
    ETCD_PORT,
    LABEL_BACKEND,
    LABEL_BUILD,
    LABEL_CNI,
    LABEL_IMAGES,
    LABEL_NODE,
    NODE_CAPS,
    NODE_SECURITY_OPT,
    NODE_SYSCTLS,
    SCENARIO_KEY,
)
from testbed.edge import up as edge
from testbed.errors import UserError
from testbed.images.select import Selection, check_overrides, select
from testbed.lifecycle import pipeline
from testbed.lifecycle.wait import parallel, until
from testbed.provider.base import ContainerSpec
from testbed.provider.docker import DockerProvider
from testbed.scenario import Scenario
from testbed.services.up import program_services

ETCD_TIMEOUT = 30.0
CNI_TIMEOUT = 90.0


@dataclass
class UpContext:
    """What the steps of `up` share while they build one cluster."""

    provider: DockerProvider
    scenario: Scenario
    name: str
    cni: Cni
    backend: str
    selection: Selection | None = None
    tags: dict[str, str] = field(default_factory=dict)
    etcd_ip: str = ""
    nodes: list[NodeRef] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ref(self) -> ClusterRef:
        """The cluster as the CNI module sees it."""
        assert self.selection is not None
        return ClusterRef(
            name=self.name, network=model.network_name(self.name), backend=self.backend,
            etcd_endpoint=f"http://{self.etcd_ip}:{ETCD_PORT}",
            images=self.selection.images, nodes=tuple(self.nodes),
            options={k: v for k, v in (("mtu", self.scenario.cni.mtu),
                                       ("pod_cidr", self.scenario.cni.pod_cidr)) if v},
        )

    def reserved_cidrs(self) -> tuple[str, ...]:
        """Pod and service ranges no node network may overlap."""
        pod = self.scenario.cni.pod_cidr or self.cni.default_pod_cidr
        return tuple(c for c in (pod, self.scenario.service_cidr) if c)

    def labels(self) -> dict[str, str]:
        """Labels that let `status` find the cluster's CNI, backend and build again."""
        assert self.selection is not None
        return {LABEL_CNI: self.cni.name, LABEL_BACKEND: self.backend,
                LABEL_BUILD: self.selection.build,
                LABEL_IMAGES: json.dumps({**self.tags, **self.selection.images}, sort_keys=True)}


def ensure_images(ctx: UpContext) -> None:
    """Select the build, then build whatever local image is missing (cached by content hash)."""
    ctx.selection = select(ctx.provider.client, ctx.cni, ctx.scenario.cni.build,
                           ctx.scenario.cni.images)
    console.progress(ctx.selection.note)
    specs = images.for_cni(ctx.cni.name if ctx.selection.build == "reference" else "")
    ctx.tags = images.ensure(ctx.provider.client, specs)


def create_network(ctx: UpContext) -> None:
    """One bridge network: the nodes' shared L2 segment."""
    ctx.provider.create_network(model.network_name(ctx.name), ctx.name, "network",
                                avoid=ctx.reserved_cidrs())


def start_etcd(ctx: UpContext) -> None:
    """The real etcd; it boots while the nodes start, and is health-checked before use."""
    name = model.etcd_name(ctx.name)
    info = ctx.provider.run(ContainerSpec(
        name=name, image=ctx.tags["etcd"], cluster=ctx.name, role="datastore",
        network=model.network_name(ctx.name), hostname=name, labels=ctx.labels(),
        command=["--name=etcd", "--data-dir=/var/lib/etcd",
                 f"--listen-client-urls=http://0.0.0.0:{ETCD_PORT}",
                 f"--advertise-client-urls=http://{name}:{ETCD_PORT}"],
    ))
    ctx.etcd_ip = info.ip or ""


def wait_etcd(ctx: UpContext) -> None:
    """etcd answers a health check (it booted while the nodes started)."""
    name = model.etcd_name(ctx.name)

    def healthy() -> bool:
        return ctx.provider.exec(name, ["etcdctl", "endpoint", "health"]).exit_code == 0

    until(healthy, ETCD_TIMEOUT, "etcd to become healthy", lambda: ctx.provider.logs(name))


def start_etcd_and_nodes(ctx: UpContext) -> None:
    """etcd and the nodes start together; nobody needs etcd before the CNI config step."""
    parallel(lambda fn: fn(ctx), [start_etcd, start_nodes])


def start_nodes(ctx: UpContext) -> None:
    """N node containers in parallel: explicit capabilities and sysctls, never --privileged."""

    def start(index: int) -> NodeRef:
        name = model.node_name(ctx.name, index)
        vols = {logical: ctx.provider.create_volume(f"{name}-{logical}", ctx.name, "node")
                for logical in ctx.cni.node_volumes}
        info = ctx.provider.run(edge.on_edge_node(index, ContainerSpec(
            name=name, image=ctx.tags["node"], cluster=ctx.name, role="node",
            hostname=name, network=model.network_name(ctx.name),
            labels={**ctx.labels(), LABEL_NODE: name},
            env={"NODE_NAME": name},
            volumes={vols[k]: path for k, path in ctx.cni.node_volumes.items()},
            cap_add=NODE_CAPS, security_opt=NODE_SECURITY_OPT, sysctls=NODE_SYSCTLS,
            init=True,
        )))
        NodeAgent(ctx.provider, name).setup()
        return NodeRef(name=name, index=index, ip=info.ip or "", volumes=vols)

    ctx.nodes = parallel(start, range(1, ctx.scenario.nodes + 1))


def configure_datastore(ctx: UpContext) -> None:
    """Write the scenario and the CNI's cluster-wide keys (e.g. flannel's config) to etcd."""
    wait_etcd(ctx)
    keys = {SCENARIO_KEY: ctx.scenario.model_dump_json(by_alias=True),
            **ctx.cni.datastore_keys(ctx.ref)}
    for key, value in keys.items():
        res = ctx.provider.exec(model.etcd_name(ctx.name), ["etcdctl", "put", key, value])
        if res.exit_code != 0:
            raise UserError(f"etcd rejected {key}: {res.stderr.strip()}")


def install_cni(ctx: UpContext) -> None:
    """Init containers copy plugins into each node; the conflist goes to /etc/cni/net.d."""
    cluster = ctx.ref

    def install(node: NodeRef) -> None:
        for spec in ctx.cni.install_specs(cluster, node):
            res = ctx.provider.run_once(spec)
            if res.exit_code != 0:
                raise UserError(f"{spec.name} failed: {(res.stderr or res.stdout).strip()}")
        conf = json.dumps(ctx.cni.conflist(cluster, node), indent=2)
        ctx.provider.put_file(node.name, f"{CNI_CONF_DIR}/{ctx.cni.conflist_name}", conf)

    parallel(install, ctx.nodes)


def start_cni(ctx: UpContext) -> None:
    """The CNI daemons, one set per node, each sharing its node's network namespace."""
    cluster = ctx.ref
    specs = [s for n in ctx.nodes for s in ctx.cni.daemon_specs(cluster, n)]
    for s in specs:
        s.labels = {**ctx.labels(), **s.labels}
    parallel(ctx.provider.run, specs)


def install_and_start_cni(ctx: UpContext) -> None:
    """Plugins are needed only once pods are added, so install and daemons go together."""
    parallel(lambda fn: fn(ctx), [install_cni, start_cni])


def deploy_pods_and_internet(ctx: UpContext) -> None:
    """Pods, while the nodes join the internet network beside them (eth1 after the CNI)."""
    parallel(lambda fn: fn(ctx), [deploy_pods, edge.attach_nodes])


def wait_cni(ctx: UpContext) -> None:
    """Every node's CNI is ready: its files exist and the conflist's plugins are installed."""
    cluster = ctx.ref

    def ready(node: NodeRef) -> None:
        daemons = [s.name for s in ctx.cni.daemon_specs(cluster, node)]

        def logs() -> str:
            return "\n".join(ctx.provider.logs(d, 30) for d in daemons)

        for path in ctx.cni.ready_files:
            def exists(p: str = path) -> bool:
                return ctx.provider.exec(node.name, ["test", "-s", p]).exit_code == 0

            until(exists, CNI_TIMEOUT, f"{path} on {node.name}", logs)
        until(lambda: ctx.cni.ready(ctx.provider, node.name), CNI_TIMEOUT,
              f"{ctx.cni.name} on {node.name} to report ready", logs)
        NodeAgent(ctx.provider, node.name).ready(CNI_TIMEOUT)

    parallel(ready, ctx.nodes)


def deploy_pods(ctx: UpContext) -> None:
    """The scenario's pods: one agent call per node, all nodes in parallel."""
    nodes = {n.index: n.name for n in ctx.nodes}
    order = {pod: i for i, (pod, _, _) in enumerate(ctx.scenario.pods())}
    per_node: dict[str, list[tuple[str, list[str]]]] = {}
    for pod, node_index, dep in ctx.scenario.pods():
        per_node.setdefault(nodes[node_index], []).append(
            (pod, [c.agent_spec() for c in dep.containers]))
    added = parallel(lambda item: NodeAgent(ctx.provider, item[0]).pod_add_many(item[1]),
                     list(per_node.items()))
    ctx.pods = sorted((p for batch in added for p in batch), key=lambda p: order[p["name"]])


def apply_policies(ctx: UpContext) -> None:
    """The scenario's NetworkPolicies, to a CNI that enforces them (as kube-controllers would)."""
    if ctx.scenario.network_policies and ctx.cni.enforces_policy:
        ctx.cni.apply_policies(ctx.provider, ctx.name, ctx.scenario)


def steps(ctx: UpContext) -> list[pipeline.Step[UpContext]]:
    """The whole of `up`, in order."""
    n = ctx.scenario.nodes
    return [
        pipeline.Step("Ensuring node images", ensure_images),
        pipeline.Step(f"Creating network {model.network_name(ctx.name)}", create_network),
        pipeline.Step(f"Starting etcd and {n} node{'s' if n > 1 else ''}", start_etcd_and_nodes),
        pipeline.Step("Writing CNI config to etcd", configure_datastore),
        pipeline.Step(f"Installing CNI ({ctx.cni.name}) and starting its daemons "
                      f"({ctx.backend})", install_and_start_cni),
        pipeline.Step("Waiting for the CNI to be ready", wait_cni),
        pipeline.Step(f"Deploying {len(ctx.scenario.pods())} pods; wiring the internet network",
                      deploy_pods_and_internet),
        pipeline.Step("Programming services", program_services),
        pipeline.Step("Applying network policies", apply_policies),
        pipeline.Step("Starting the edge (ingress, outside client, echo server)",
                      edge.start_edge),
    ]


def up(provider: DockerProvider, scenario: Scenario, name: str, cni: Cni, backend: str,
       retain: bool = False) -> UpContext:
    """Create a cluster; on any failure (Ctrl-C included) remove everything unless `retain`."""
    model.validate_name(name)
    check_overrides(cni, scenario.cni.images)
    if name in provider.clusters():
        raise UserError(f"a cluster named {name!r} already exists: remove it with "
                        f"`python -m testbed down {name}` or choose another --name")
    ctx = UpContext(provider=provider, scenario=scenario, name=name, cni=cni, backend=backend)
    pipeline.run(steps(ctx), ctx, lambda: provider.delete_cluster(name), retain=retain)
    return ctx
