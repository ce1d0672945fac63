"""The core steps of `up`: images, network, etcd, nodes, CNI daemons, pods, policies."""

from __future__ import annotations

import json
import time

from testbed import console, images
from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.cluster.etcd import CLIENT_PORT, ClusterEtcd
from testbed.cni import NodeRef
from testbed.cni.select import select
from testbed.constants import (
    ETCD_PORT,
    LABEL_NODE,
    NODE_CAPS,
    NODE_SECURITY_OPT,
    NODE_SYSCTLS,
)
from testbed.edge import up as edge
from testbed.errors import ProviderError, StepError, UserError
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.wait import TIMEOUTS, parallel, pool, until
from testbed.provider.base import ContainerSpec
from testbed_contract.agent import PodRecord
from testbed_contract.node import AGENT_CMD, CNI_CONF_DIR, NODE_SETUP_LOG
from testbed_contract.registry import SCENARIO_KEY

__all__ = ["UpContext"]  # the steps' shared context, re-exported for callers of the steps

ETCD_TIMEOUT = TIMEOUTS.etcd
CNI_TIMEOUT = TIMEOUTS.cni
# The CNI's own readiness check is two `docker exec`s (calico-node's probe is a Go binary):
# polled every 0.1 s by every node at once it kept a 2-core machine busy while 10 nodes
# waited for their BGP mesh, so the pause backs off to this.
READY_POLL_MAX = 0.8


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
        res = ctx.provider.run_once(spec, timeout=TIMEOUTS.init_container)
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
    began = time.monotonic()
    with pool(2 * n + 1) as workers:

        def configure() -> None:
            start_etcd(ctx)
            configure_datastore(ctx)
            ctx.timings.append(("  etcd configured", time.monotonic() - began))

        def install(index: int, vols: dict[str, str]) -> None:
            install_plugins(ctx, NodeRef(name=model.node_name(ctx.name, index), index=index,
                                         ip="", volumes=vols))

        def node(index: int) -> NodeRef:
            vols = node_volumes(ctx, index)
            installed = workers.submit(install, index, vols)
            ref = start_node(ctx, index, vols)
            installed.result()
            write_conflist(ctx, ref)
            ctx.timings.append((f"  {ref.name} started", time.monotonic() - began))
            return ref

        configured = workers.submit(configure)
        nodes = [workers.submit(node, i) for i in range(1, n + 1)]
        ctx.nodes = [f.result() for f in nodes]
        configured.result()


def start_cni(ctx: UpContext) -> None:
    """The CNI daemons, one set per node, each sharing its node's network namespace."""
    cluster = ctx.ref
    specs = [s for n in ctx.nodes for s in ctx.cni.daemon_specs(cluster, n)]
    labels = ctx.labels()
    for s in specs:
        s.labels = {**labels, **s.labels}
    parallel(ctx.provider.run, specs, workers=min(len(specs), 16))


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
          interval=0.1, max_interval=READY_POLL_MAX)


def add_pods(ctx: UpContext, node: NodeRef, batch: list[tuple[str, list[str]]]
             ) -> list[PodRecord]:
    """A node's pods once its CNI is ready: one agent call that waits for the CNI's files
    and then adds the pods, unless the CNI has a readiness check of its own to pass first."""
    agent = NodeAgent(ctx.provider, node.name)
    if ctx.cni.has_ready_check:
        began = time.monotonic()
        wait_cni(ctx, node)
        ctx.timings.append((f"  {node.name}: {ctx.cni.name} ready after",
                            time.monotonic() - began))
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
    began = time.monotonic()
    with pool(n + 1) as workers:
        internet = workers.submit(edge.start_internet, ctx) if ctx.scenario.edge else None

        def join(node: NodeRef) -> None:
            if internet is not None:
                internet.result()
                edge.join_internet(ctx, node.name)

        def deploy(node: NodeRef) -> list[PodRecord]:
            added = add_pods(ctx, node, per_node[node.index])
            ctx.timings.append((f"  {node.name}: {len(added)} pods", time.monotonic() - began))
            join(node)
            return added

        batches = [workers.submit(deploy, node) for node in ctx.nodes]
        added = [p for f in batches for p in f.result()]
        if internet is not None:
            internet.result()
    ctx.pods = sorted(added, key=lambda p: order[p["name"]])


def apply_policies(ctx: UpContext) -> None:
    """The scenario's NetworkPolicies, to a CNI that enforces them (as kube-controllers would)."""
    ctx.cni.apply_policies(ctx.provider, ctx.name, ctx.scenario)
