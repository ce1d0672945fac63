"""`up`: the cluster lifecycle as a flat list of steps, rolled back as one on failure."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from testbed import console, images
from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.cluster.etcd import CLIENT_PORT, ClusterEtcd
from testbed.cni import ClusterRef, Cni, NodeRef
from testbed.cni.select import Selection, check_overrides, select
from testbed.constants import (
    ETCD_PORT,
    LABEL_BACKEND,
    LABEL_BUILD,
    LABEL_CNI,
    LABEL_IMAGES,
    LABEL_NODE,
    NODE_CAPS,
    NODE_SECURITY_OPT,
    NODE_SYSCTLS,
)
from testbed.edge import up as edge
from testbed.errors import ProviderError, StepError, UserError
from testbed.lifecycle import pipeline
from testbed.lifecycle.wait import parallel, until
from testbed.provider.base import ContainerSpec, Provider
from testbed.scenario import Scenario
from testbed.services.up import program_services
from testbed_contract.agent import PodRecord
from testbed_contract.node import AGENT_CMD, CNI_CONF_DIR, NODE_SETUP_LOG
from testbed_contract.registry import SCENARIO_KEY

ETCD_TIMEOUT = 30.0
CNI_TIMEOUT = 90.0


@dataclass
class UpContext:
    """What the steps of `up` share while they build one cluster."""

    provider: Provider
    scenario: Scenario
    name: str
    cni: Cni
    backend: str
    selection: Selection | None = None
    tags: dict[str, str] = field(default_factory=dict)
    etcd_ip: str = ""
    nodes: list[NodeRef] = field(default_factory=list)
    pods: list[PodRecord] = field(default_factory=list)

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
                LABEL_IMAGES: json.dumps(self.images(), sort_keys=True)}

    def images(self) -> dict[str, str]:
        """Every image the cluster runs: core images by name, CNI images as `<cni>-<role>`
        (a CNI role may share a core image's name: calico's `node`)."""
        assert self.selection is not None
        return {**self.tags, **{f"{self.cni.name}-{role}": ref
                                for role, ref in self.selection.images.items()}}


def ensure_images(ctx: UpContext) -> None:
    """Select the build, then build whatever local image is missing (cached by content hash)."""
    cfg = ctx.scenario.cni
    ctx.selection = select(ctx.provider.images, ctx.cni, cfg.build, cfg.version or "",
                           cfg.module or "", cfg.images)
    console.progress(ctx.selection.note)
    cni_specs = [s for role, s in ctx.selection.specs.items() if role not in cfg.images]
    ctx.tags = images.ensure(ctx.provider.images, (*images.CORE, *cni_specs))


def preflight(ctx: UpContext) -> None:
    """What the CNI cannot run on this kernel is refused before any node starts."""
    ctx.cni.preflight(ctx.provider, ctx.name, ctx.tags["node"])


def create_network(ctx: UpContext) -> None:
    """One bridge network: the nodes' shared L2 segment, with etcd's address fixed on it."""
    subnet = ctx.provider.create_network(model.network_name(ctx.name), ctx.name, "network",
                                         avoid=ctx.reserved_cidrs())
    ctx.etcd_ip = model.etcd_address(subnet)


def start_etcd(ctx: UpContext) -> None:
    """The real etcd; it boots while the nodes start, and is health-checked before use."""
    name = model.etcd_name(ctx.name)
    ctx.provider.run(ContainerSpec(
        name=name, image=ctx.tags["etcd"], cluster=ctx.name, role="datastore",
        network=model.network_name(ctx.name), ip=ctx.etcd_ip, hostname=name,
        labels=ctx.labels(), ports={CLIENT_PORT: ("127.0.0.1", 0)},
        command=["--name=etcd", "--data-dir=/var/lib/etcd",
                 f"--listen-client-urls=http://0.0.0.0:{ETCD_PORT}",
                 f"--advertise-client-urls=http://{name}:{ETCD_PORT}"],
    ))


def configure_datastore(ctx: UpContext) -> None:
    """Once etcd answers, write the scenario and the CNI's cluster-wide keys (e.g. flannel's
    config) through the host's etcd client."""
    keys = {SCENARIO_KEY: ctx.scenario.model_dump_json(by_alias=True),
            **ctx.cni.datastore_keys(ctx.ref)}
    name = model.etcd_name(ctx.name)
    etcd = ClusterEtcd(ctx.provider, ctx.name)
    try:
        etcd.wait_healthy(ETCD_TIMEOUT)
    except StepError as e:
        raise StepError(f"{e}\n--- last logs ---\n{ctx.provider.logs(name).rstrip()}") from e
    for key, value in keys.items():
        try:
            etcd.put(key, value)
        except StepError as e:
            raise UserError(f"etcd rejected the CNI's keys ({', '.join(keys)}): {e}") from e


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
        # The node's start-up chores (plugin links, state dirs) run as it boots, and again
        # on a restart; `ready` later waits for the plugins they link.
        command=[*AGENT_CMD, "boot", "--log", NODE_SETUP_LOG],
        volumes={vols[k]: path for k, path in ctx.cni.node_volumes.items()},
        cap_add=NODE_CAPS, security_opt=NODE_SECURITY_OPT, sysctls=NODE_SYSCTLS,
        init=True,
    )
    info = ctx.provider.run(edge.on_edge_node(index, spec) if ctx.scenario.edge else spec)
    return NodeRef(name=name, index=index, ip=info.ip or "", volumes=vols)


def install_plugins(ctx: UpContext, node: NodeRef) -> None:
    """The DaemonSet's init containers: they need only the node's volumes (and, for calico's
    conflist, etcd's fixed address), so they run while the node container starts."""
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

    Nothing waits for more than it needs: etcd's address is fixed, so a node's init
    containers run beside the node container itself, and no node waits for the others or
    for etcd. The CNI module sees no nodes in `ClusterRef.nodes` yet (its install and
    datastore keys must not need them).
    """
    n = ctx.scenario.nodes
    with ThreadPoolExecutor(max_workers=2 * n + 1) as pool:

        def configure() -> None:
            start_etcd(ctx)
            configure_datastore(ctx)

        def install(index: int, vols: dict[str, str]) -> None:
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


def cni_logs(ctx: UpContext, node: NodeRef) -> str:
    """The last lines of a node's CNI daemons and of its start-up chores."""
    daemons = [s.name for s in ctx.cni.daemon_specs(ctx.ref, node)]
    try:
        setup = ctx.provider.read_file(node.name, NODE_SETUP_LOG).strip()
    except ProviderError as e:
        setup = str(e)
    return "\n".join([*(ctx.provider.logs(d, 30) for d in daemons), f"node setup: {setup}"])


def wait_cni(ctx: UpContext, node: NodeRef) -> None:
    """One node's CNI is ready: its daemon's files are written, the conflist's plugins are
    installed, and the daemon's own readiness check passes."""
    state = NodeAgent(ctx.provider, node.name).ready(CNI_TIMEOUT, ctx.cni.ready_files)
    if not state.get("ready"):
        raise StepError(f"timed out after {CNI_TIMEOUT:.0f}s waiting for {ctx.cni.name} on "
                        f"{node.name}: {state.get('reason')}\n--- last logs ---\n"
                        f"{cni_logs(ctx, node)}")
    until(lambda: ctx.cni.ready(ctx.provider, node.name), CNI_TIMEOUT,
          f"{ctx.cni.name} on {node.name} to report ready", lambda: cni_logs(ctx, node),
          interval=0.1)


def add_pods(ctx: UpContext, node: NodeRef, batch: list[tuple[str, list[str]]]
             ) -> list[PodRecord]:
    """A node's pods once its CNI is ready: one agent call that waits for the CNI's files
    and then adds the pods, unless the CNI has a readiness check of its own to pass first."""
    agent = NodeAgent(ctx.provider, node.name)
    if ctx.cni.has_ready_check:
        wait_cni(ctx, node)
        return agent.pod_add_many(batch) if batch else []
    if not batch:
        wait_cni(ctx, node)
        return []
    try:
        return agent.pod_add_many(batch, wait_cni=CNI_TIMEOUT, cni_files=ctx.cni.ready_files)
    except StepError as e:
        raise StepError(f"{e}\n--- last logs ---\n{cni_logs(ctx, node)}") from e


def deploy_pods(ctx: UpContext) -> None:
    """Each node's pods in one agent call as soon as that node's CNI is ready; with an edge,
    the internet network starts meanwhile and each node joins it once its pods are in
    (eth1 after the CNI has chosen eth0)."""
    order = {pod: i for i, (pod, _, _) in enumerate(ctx.scenario.pods())}
    per_node: dict[int, list[tuple[str, list[str]]]] = {n.index: [] for n in ctx.nodes}
    for pod, node_index, dep in ctx.scenario.pods():
        per_node[node_index].append((pod, [c.agent_spec() for c in dep.containers]))
    n = len(ctx.nodes)
    with ThreadPoolExecutor(max_workers=n + 1) as pool:
        internet = pool.submit(edge.start_internet, ctx) if ctx.scenario.edge else None

        def join(node: NodeRef) -> None:
            if internet is not None:
                internet.result()
                edge.join_internet(ctx, node.name)

        def deploy(node: NodeRef) -> list[PodRecord]:
            added = add_pods(ctx, node, per_node[node.index])
            join(node)
            return added

        batches = [pool.submit(deploy, node) for node in ctx.nodes]
        added = [p for f in batches for p in f.result()]
        if internet is not None:
            internet.result()
    ctx.pods = sorted(added, key=lambda p: order[p["name"]])


def apply_policies(ctx: UpContext) -> None:
    """The scenario's NetworkPolicies, to a CNI that enforces them (as kube-controllers would)."""
    ctx.cni.apply_policies(ctx.provider, ctx.name, ctx.scenario)


def steps(ctx: UpContext) -> list[pipeline.Step[UpContext]]:
    """The whole of `up`, in order."""
    n, cni = ctx.scenario.nodes, ctx.cni.name
    pods = len(ctx.scenario.pods())
    return [
        pipeline.Step("Ensuring node images", ensure_images),
        pipeline.Step(f"Checking the kernel for {cni}", preflight),
        pipeline.Step(f"Creating network {model.network_name(ctx.name)}", create_network),
        pipeline.Step(f"Starting etcd and {n} node{'s' if n > 1 else ''}, installing {cni}",
                      start_cluster),
        pipeline.Step(f"Starting {cni} daemons ({ctx.backend})", start_cni),
        pipeline.Step(f"Deploying {pods} pods as each node's {cni} becomes ready"
                      + ("; starting the internet" if ctx.scenario.edge else ""), deploy_pods),
        *([pipeline.Step("Programming services", program_services)]
          if ctx.scenario.services else []),
        *([pipeline.Step("Applying network policies", apply_policies)]
          if ctx.scenario.network_policies and ctx.cni.enforces_policy else []),
        *([pipeline.Step("Starting the edge (ingress)", edge.start_edge)]
          if ctx.scenario.edge else []),
    ]


def up(provider: Provider, scenario: Scenario, name: str, cni: Cni, backend: str,
       retain: bool = False) -> UpContext:
    """Create a cluster; on any failure (Ctrl-C included) remove everything unless `retain`."""
    model.validate_name(name)
    check_overrides(cni, scenario.cni.images)
    if scenario.cni.build != "upstream":  # a release the source build cannot make: say so now
        cni.source_images(scenario.cni.version or cni.default_release,
                          scenario.cni.module or cni.module)
    if name in provider.clusters():
        raise UserError(f"a cluster named {name!r} already exists: remove it with "
                        f"`python -m testbed down {name}` or choose another --name")
    ctx = UpContext(provider=provider, scenario=scenario, name=name, cni=cni, backend=backend)
    pipeline.run(steps(ctx), ctx, lambda: provider.delete_cluster(name), retain=retain)
    return ctx
