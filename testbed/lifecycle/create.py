"""`up`: the cluster lifecycle as a flat list of steps, rolled back as one on failure."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
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
from testbed.errors import StepError, UserError
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
    """etcd answers a health check."""
    name = model.etcd_name(ctx.name)

    def healthy() -> bool:
        return ctx.provider.exec(name, ["etcdctl", "endpoint", "health"]).exit_code == 0

    until(healthy, ETCD_TIMEOUT, "etcd to become healthy", lambda: ctx.provider.logs(name),
          interval=0.1)


def configure_datastore(ctx: UpContext) -> None:
    """Write the scenario and the CNI's cluster-wide keys (e.g. flannel's config) to etcd."""
    wait_etcd(ctx)
    keys = {SCENARIO_KEY: ctx.scenario.model_dump_json(by_alias=True),
            **ctx.cni.datastore_keys(ctx.ref)}
    for key, value in keys.items():
        res = ctx.provider.exec(model.etcd_name(ctx.name), ["etcdctl", "put", key, value])
        if res.exit_code != 0:
            raise UserError(f"etcd rejected {key}: {res.stderr.strip()}")


def node_volumes(ctx: UpContext, index: int) -> dict[str, str]:
    """The node's volumes (CNI binaries, CNI state): logical name -> volume name."""
    name = model.node_name(ctx.name, index)
    return {logical: ctx.provider.create_volume(f"{name}-{logical}", ctx.name, "node")
            for logical in ctx.cni.node_volumes}


def start_node(ctx: UpContext, index: int, vols: dict[str, str]) -> NodeRef:
    """One node container: explicit capabilities and sysctls, never --privileged."""
    name = model.node_name(ctx.name, index)
    spec = ContainerSpec(
        name=name, image=ctx.tags["node"], cluster=ctx.name, role="node",
        hostname=name, network=model.network_name(ctx.name),
        labels={**ctx.labels(), LABEL_NODE: name},
        env={"NODE_NAME": name},
        volumes={vols[k]: path for k, path in ctx.cni.node_volumes.items()},
        cap_add=NODE_CAPS, security_opt=NODE_SECURITY_OPT, sysctls=NODE_SYSCTLS,
        init=True,
    )
    info = ctx.provider.run(edge.on_edge_node(index, spec) if ctx.scenario.edge else spec)
    NodeAgent(ctx.provider, name).setup()
    return NodeRef(name=name, index=index, ip=info.ip or "", volumes=vols)


def install_plugins(ctx: UpContext, node: NodeRef) -> None:
    """The DaemonSet's init containers: they need only the node's volumes (and, for calico's
    conflist, etcd's address), so they run while the node container starts."""
    for spec in ctx.cni.install_specs(ctx.ref, node):
        res = ctx.provider.run_once(spec)
        if res.exit_code != 0:
            raise UserError(f"{spec.name} failed: {(res.stderr or res.stdout).strip()}")


def write_conflist(ctx: UpContext, node: NodeRef) -> None:
    """The CNI's conflist into the node's /etc/cni/net.d."""
    conf = json.dumps(ctx.cni.conflist(ctx.ref, node), indent=2)
    ctx.provider.put_file(node.name, f"{CNI_CONF_DIR}/{ctx.cni.conflist_name}", conf)


def start_cluster(ctx: UpContext) -> None:
    """etcd boots and takes the CNI's config while each node starts and gets its plugins.

    Nothing waits for more than it needs: a node's init containers run beside the node
    container itself, and no node waits for the others. The CNI module sees no nodes in
    `ClusterRef.nodes` yet (its install and datastore keys must not need them).
    """
    n = ctx.scenario.nodes
    with ThreadPoolExecutor(max_workers=2 * n + 2) as pool:
        etcd_started = pool.submit(start_etcd, ctx)

        def configure() -> None:
            etcd_started.result()
            configure_datastore(ctx)

        def install(index: int, vols: dict[str, str]) -> None:
            etcd_started.result()
            install_plugins(ctx, NodeRef(name=model.node_name(ctx.name, index), index=index,
                                         ip="", volumes=vols))

        def node(index: int) -> NodeRef:
            vols = node_volumes(ctx, index)
            installed = pool.submit(install, index, vols)
            ref = start_node(ctx, index, vols)
            installed.result()
            write_conflist(ctx, ref)
            return ref

        configured = pool.submit(configure)
        nodes = [pool.submit(node, i) for i in range(1, n + 1)]
        ctx.nodes = [f.result() for f in nodes]
        configured.result()


def start_cni(ctx: UpContext) -> None:
    """The CNI daemons, one set per node, each sharing its node's network namespace."""
    cluster = ctx.ref
    specs = [s for n in ctx.nodes for s in ctx.cni.daemon_specs(cluster, n)]
    for s in specs:
        s.labels = {**ctx.labels(), **s.labels}
    parallel(ctx.provider.run, specs)


def wait_cni(ctx: UpContext, node: NodeRef) -> None:
    """One node's CNI is ready: its daemon's files are written, the conflist's plugins are
    installed, and the daemon's own readiness check passes."""
    daemons = [s.name for s in ctx.cni.daemon_specs(ctx.ref, node)]

    def logs() -> str:
        return "\n".join(ctx.provider.logs(d, 30) for d in daemons)

    state = NodeAgent(ctx.provider, node.name).ready(CNI_TIMEOUT, ctx.cni.ready_files)
    if not state.get("ready"):
        raise StepError(f"timed out after {CNI_TIMEOUT:.0f}s waiting for {ctx.cni.name} on "
                        f"{node.name}: {state.get('reason')}\n--- last logs ---\n{logs()}")
    until(lambda: ctx.cni.ready(ctx.provider, node.name), CNI_TIMEOUT,
          f"{ctx.cni.name} on {node.name} to report ready", logs, interval=0.1)


def deploy_pods(ctx: UpContext) -> None:
    """Each node's pods in one agent call, as soon as that node's CNI is ready."""
    order = {pod: i for i, (pod, _, _) in enumerate(ctx.scenario.pods())}
    per_node: dict[int, list[tuple[str, list[str]]]] = {n.index: [] for n in ctx.nodes}
    for pod, node_index, dep in ctx.scenario.pods():
        per_node[node_index].append((pod, [c.agent_spec() for c in dep.containers]))

    def deploy(node: NodeRef) -> list[dict[str, Any]]:
        wait_cni(ctx, node)
        batch = per_node[node.index]
        return NodeAgent(ctx.provider, node.name).pod_add_many(batch) if batch else []

    added = parallel(deploy, ctx.nodes)
    ctx.pods = sorted((p for batch in added for p in batch), key=lambda p: order[p["name"]])


def deploy_pods_and_internet(ctx: UpContext) -> None:
    """Pods, while the nodes join the internet network beside them (eth1 after the CNI)."""
    parallel(lambda fn: fn(ctx), [deploy_pods, edge.attach_nodes] if ctx.scenario.edge
             else [deploy_pods])


def apply_policies(ctx: UpContext) -> None:
    """The scenario's NetworkPolicies, to a CNI that enforces them (as kube-controllers would)."""
    if ctx.scenario.network_policies and ctx.cni.enforces_policy:
        ctx.cni.apply_policies(ctx.provider, ctx.name, ctx.scenario)


def start_edge(ctx: UpContext) -> None:
    """The ingress, when the scenario has an edge."""
    if ctx.scenario.edge:
        edge.start_edge(ctx)


def steps(ctx: UpContext) -> list[pipeline.Step[UpContext]]:
    """The whole of `up`, in order."""
    n, cni = ctx.scenario.nodes, ctx.cni.name
    pods = len(ctx.scenario.pods())
    return [
        pipeline.Step("Ensuring node images", ensure_images),
        pipeline.Step(f"Creating network {model.network_name(ctx.name)}", create_network),
        pipeline.Step(f"Starting etcd and {n} node{'s' if n > 1 else ''}, installing {cni}",
                      start_cluster),
        pipeline.Step(f"Starting {cni} daemons ({ctx.backend})", start_cni),
        pipeline.Step(f"Deploying {pods} pods as each node's {cni} becomes ready"
                      + ("; wiring the internet network" if ctx.scenario.edge else ""),
                      deploy_pods_and_internet),
        *([pipeline.Step("Programming services", program_services)]
          if ctx.scenario.services else []),
        *([pipeline.Step("Applying network policies", apply_policies)]
          if ctx.scenario.network_policies and ctx.cni.enforces_policy else []),
        *([pipeline.Step("Starting the edge (ingress)", start_edge)]
          if ctx.scenario.edge else []),
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
