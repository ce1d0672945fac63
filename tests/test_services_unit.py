"""`up`'s "Programming services" step without Docker: every node's daemon, then one wait."""

from __future__ import annotations

import json
import threading

import pytest

from testbed import cni
from testbed.cni import NodeRef
from testbed.cni.select import Selection
from testbed.errors import ProviderError, StepError
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.wait import Timeouts
from testbed.provider.base import ExecResult
from testbed.scenario import load
from testbed.services import registry
from testbed.services import up as services
from testbed.services.allocate import allocate
from testbed_contract.agent import PodRecord
from testbed_contract.node import DAEMON_STATUS_FILE


class Daemons:
    """A fake provider of nodes whose daemons mark only their own pods ready, as the real
    ones do: a node's status lists the endpoints of the pods on nodes whose daemon runs."""

    def __init__(self, ctx: UpContext, silent: frozenset[str] = frozenset()) -> None:
        self.ctx = ctx
        self.silent = silent  # nodes whose daemon starts but never marks a pod ready
        self.started: set[str] = set()
        self.lock = threading.Lock()

    def exec(self, node: str, argv: list[str], env: dict[str, str] | None = None
             ) -> ExecResult:
        assert argv[-2:] == ["daemon", "start"], argv
        with self.lock:
            self.started.add(node)
        return ExecResult(0, "{}", "")

    def read_file(self, node: str, path: str) -> str:
        with self.lock:
            running = set(self.started)
        if node not in running:
            raise ProviderError(f"{path} in {node} is not a single file")
        if path != DAEMON_STATUS_FILE:
            return "daemon log line\n"
        labels = {pod: dep.pod_labels for pod, _, dep in self.ctx.scenario.pods()}
        ready = [registry.pod_record(p, labels[p["name"]]) for p in self.ctx.pods
                 if p["node"] in running - self.silent]
        want = services.expected_endpoints(allocate(self.ctx.scenario), ready)
        return json.dumps({"node": node, "services": want})


def context(nodes: int) -> UpContext:
    """The default scenario at `nodes` nodes, two echo pods per node, as `up` has it then."""
    base = load("scenarios/default.yaml")
    deps = [d.model_copy(update={"replicas": 2 * nodes}) if d.name == "echo" else d
            for d in base.deployments]
    scenario = base.model_copy(update={"nodes": nodes, "deployments": deps})
    ctx = UpContext(provider=None,  # type: ignore[arg-type]  # set by the test
                    scenario=scenario, name="tbt-unit", cni=cni.REGISTRY["flannel"],
                    backend="vxlan", selection=Selection("upstream", {}, ""),
                    etcd_ip="172.30.0.254")
    ctx.nodes = [NodeRef(f"tbt-unit-node-{i}", i, f"172.30.0.{i + 1}")
                 for i in range(1, nodes + 1)]
    ctx.pods = [PodRecord(name=pod, node=f"tbt-unit-node-{i}",  # type: ignore[typeddict-item]
                          ip=f"10.244.{i}.{k + 2}/24", containers=[])
                for k, (pod, i, _) in enumerate(scenario.pods())]
    return ctx


@pytest.fixture(autouse=True)
def no_etcd(monkeypatch: pytest.MonkeyPatch) -> None:
    """No registry writes, and a short wait: the fake daemons sync at once."""
    monkeypatch.setattr(registry, "publish", lambda *a, **k: None)
    monkeypatch.setattr(services, "TIMEOUTS", Timeouts(services=3.0))


@pytest.mark.parametrize("nodes", [3, 10, 16])
def test_every_daemon_starts_before_any_node_waits_for_the_rules(nodes: int) -> None:
    ctx = context(nodes)
    fake = Daemons(ctx)
    ctx.provider = fake  # type: ignore[assignment]
    services.program_services(ctx)
    assert fake.started == {n.name for n in ctx.nodes}


def test_a_timeout_names_the_nodes_behind_and_the_pods_they_lack() -> None:
    ctx = context(10)
    ctx.provider = Daemons(ctx, silent=frozenset({"tbt-unit-node-9"}))  # type: ignore[assignment]
    with pytest.raises(StepError) as err:
        services.program_services(ctx)
    text = str(err.value)
    assert "10 of 10 nodes behind" in text
    lacking = [ln for ln in text.splitlines() if ln.startswith("tbt-unit-node-1 lacks")]
    assert lacking, text
    # Node 9's two echo pods; iperf is on node 2, which answers.
    assert lacking[0].startswith("tbt-unit-node-1 lacks 2: default/echo"), lacking[0]
    assert "on tbt-unit-node-9" in lacking[0] and "on tbt-unit-node-2" not in lacking[0]
