"""Bringing a node back after a node fault: container, CNI daemons, pods, service daemon."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.cluster.etcd import ClusterEtcd
from testbed.constants import ETCD_PORT
from testbed.errors import ProviderError, StepError, TestbedError
from testbed.lifecycle.wait import TIMEOUTS
from testbed.scenario import Scenario
from testbed.services import registry
from testbed_contract.registry import SCENARIO_KEY

if TYPE_CHECKING:
    from testbed.faults.facts import Facts

STALE_NETNS = ('for f in /var/run/netns/*; do [ -e "$f" ] && ! mountpoint -q "$f" && rm -f "$f"; '
               "done; true")


def poll(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
         ) -> float:
    """Poll until true; seconds waited. Unlike the lifecycle's waits it goes on after a
    Ctrl-C: an undo runs to its end."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise StepError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


def wait_etcd(facts: Facts) -> None:
    """Until etcd answers again (its host port may change when it restarts)."""
    deadline = time.monotonic() + TIMEOUTS.etcd
    while True:
        try:
            ClusterEtcd(facts.provider, facts.cluster).wait_healthy(1.0)
            return
        except StepError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_cni(facts: Facts, index: int) -> None:
    """The node's CNI is ready again: its files, its plugins, its own readiness check."""
    node = facts.node(index)
    if facts.cni is None:
        return
    state = NodeAgent(facts.provider, node).ready(TIMEOUTS.cni, facts.cni.ready_files)
    if not state.get("ready"):
        raise StepError(f"{node}: {facts.cni.name} not ready after the fault: "
                        f"{state.get('reason')}")
    cni = facts.cni
    poll(lambda: cni.ready(facts.provider, node), TIMEOUTS.cni,
         f"{cni.name} on {node} to report ready")


def _agent_up(facts: Facts, node: str) -> bool:
    try:
        NodeAgent(facts.provider, node).pods()
    except TestbedError:
        return False
    return True


def recover(facts: Facts, index: int) -> None:
    """Start the node if it is down, restart what shares its namespace, and re-create its
    pods (a kubelet's job after a reboot), registered again for the service proxies."""
    node = facts.node(index)
    running = {c.name for c in facts.provider.containers(cluster=facts.cluster)
               if c.status == "running"}
    if node not in running:
        facts.provider.start(node)
    poll(lambda: _agent_up(facts, node), TIMEOUTS.cni, f"the agent on {node}")
    for c in facts.dependents(index):
        if "-install-" not in c.name:
            facts.provider.restart(c.name)  # into the node's new network namespace
    wait_etcd(facts)
    etcd = ClusterEtcd(facts.provider, facts.cluster)
    stored = etcd.get(SCENARIO_KEY)
    if stored is None:
        raise StepError(f"{facts.cluster}: no scenario in etcd to re-create {node}'s pods")
    scenario = Scenario.model_validate_json(stored)
    wait_cni(facts, index)
    agent = NodeAgent(facts.provider, node)
    # A namespace file whose mount died with the old container is a plain file now; CNI
    # plugins refuse it ("unknown FS magic"), while a missing one is a clean DEL.
    facts.provider.exec(node, ["sh", "-c", STALE_NETNS])
    for pod in agent.pods():  # records of pods whose namespaces died with the container
        with contextlib.suppress(TestbedError):
            agent.pod_del(str(pod["name"]))
    mine = [(pod, dep) for pod, i, dep in scenario.pods() if i == index]
    added = agent.pod_add_many([(pod, [c.agent_spec() for c in dep.containers])
                                for pod, dep in mine]) if mine else []
    labels = {pod: dep.pod_labels for pod, dep in mine}
    for rec in added:
        registry.register_pod(facts.provider, facts.cluster,
                              registry.pod_record(rec, labels.get(str(rec["name"]), {})))
    if scenario.services:
        etcd_ip = next((c.ips.get(model.network_name(facts.cluster)) for c in
                        facts.provider.containers(cluster=facts.cluster, role="datastore")),
                       None)
        try:
            agent.call("daemon", "start",
                       env={"ETCD_ENDPOINTS": f"http://{etcd_ip}:{ETCD_PORT}"})
        except ProviderError as e:
            raise StepError(f"{node}: the service daemon did not start again: {e}") from e
    if scenario.network_policies and facts.cni is not None and facts.cni.enforces_policy:
        facts.cni.apply_policies(facts.provider, facts.cluster, scenario)
