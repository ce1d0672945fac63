"""The matrix's batched probes, no Docker: one agent call per source, judged per case."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.check.cases import Case
from testbed.check.matrix import PROBE_COUNT, batches, execute
from testbed.provider.base import ExecResult, Provider
from testbed_contract.agent import ProbeReply
from testbed_contract.node import AGENT_CMD, PROBE_MODULE
from testbed_node import probe, workload


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    """Two workload servers on 127.0.0.1, answering as pod-a and pod-b: pod -> base URL."""
    urls, running = {}, []
    for pod in ("pod-a", "pod-b"):
        srv = workload.make_server(workload.Identity(pod, "n", "app", 0, "10.9.0.7"),
                                   "127.0.0.1")
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        urls[pod] = f"http://127.0.0.1:{srv.server_address[1]}/"
        running.append(srv)
    yield urls
    for srv in running:
        srv.shutdown()
        srv.server_close()


class AgentProvider:
    """Answers the agent's batched probe in this process (real HTTP on 127.0.0.1); nodes in
    `broken` answer as an agent whose pod is gone."""

    def __init__(self, broken: tuple[str, ...] = ()) -> None:
        self.broken = broken
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def exec(self, container: str, argv: list[str], env: dict[str, str] | None = None,
             user: str = "") -> ExecResult:
        with self.lock:
            self.calls.append((container, argv))
        if container in self.broken:
            return ExecResult(1, json.dumps({"error": "no pod named x"}), "")
        if argv[:len(AGENT_CMD) + 1] == [*AGENT_CMD, "probe-many"]:
            targets = probe.parse_targets(argv[-1])
        elif argv[:4] == ["python3", "-m", PROBE_MODULE, "--batch"]:
            targets = probe.parse_targets(argv[4])
        else:
            return ExecResult(2, "", f"unexpected {argv}")
        return ExecResult(0, json.dumps(probe.probe_many(targets)), "")


def _provider(p: AgentProvider) -> Provider:
    provider: Any = p
    return provider


def _case(src: str, url: str, expect: str = "", **kw: Any) -> Case:
    return Case("pod-to-pod-cross-node", src, expect, url=url,
                expect_pods=(expect,) if expect else (), **kw)


def test_batches_group_by_source_in_first_seen_order() -> None:
    a1 = _case("a", "http://x/", src_node="n1", src_pod="a")
    c1 = _case("c", "http://x/", src_container="client")
    a2 = _case("a", "http://y/", src_node="n1")  # no src_pod: the source pod is `src`
    b1 = _case("b", "http://y/", src_node="n1", src_pod="b")
    own = _case("a", "http://z/", src_node="n1", src_pod="a",
                runner=lambda provider, case: ProbeReply())  # type: ignore[typeddict-item]
    skipped = Case("hairpin", "a", "-", src_node="n1", src_pod="a")
    c2 = _case("c", "http://z/", src_container="client")
    assert batches([a1, c1, a2, b1, own, skipped, c2]) == [[a1, a2], [c1, c2], [b1], [own]]


def test_execute_runs_one_call_per_source_and_judges_each_case(
        servers: dict[str, str]) -> None:
    a, b = servers["pod-a"], servers["pod-b"]
    fine = [_case("s1", a, "pod-a", src_node="n1", src_pod="s1"),
            _case("s1", b, "pod-b", src_node="n1", src_pod="s1"),
            _case("s1", a, "pod-z", src_node="n1", src_pod="s1"),
            _case("s1", "http://127.0.0.1:9/", "pod-a", src_node="n1", src_pod="s1"),
            _case("s2", b, "pod-b", src_node="n2", src_pod="s2"),
            _case("outside", a, "pod-a", src_container="client")]
    lost = [_case("s3", a, "pod-a", src_node="n3", src_pod="s3"),
            _case("s3", b, "pod-b", src_node="n3", src_pod="s3")]
    ran: list[Case] = []

    def runner(provider: Provider, case: Case) -> ProbeReply:
        ran.append(case)
        return probe.probe(b, 1, 2)

    own = _case("s1", b, "pod-b", src_node="n1", src_pod="s1", runner=runner)
    skipped = Case("hairpin", "s1", "-", src_node="n1", src_pod="s1", reason="no service")
    fake = AgentProvider(broken=("n3",))
    cases = [*fine, own, *lost, skipped]
    assert execute(_provider(fake), cases) is cases
    assert sorted(c for c, _ in fake.calls) == ["client", "n1", "n2", "n3"]
    assert ran == [own]
    assert [c.status for c in cases] == ["pass", "pass", "fail", "fail", "pass", "pass",
                                         "pass", "fail", "fail", "skip"]
    assert fine[1].reason == f"{b} -> pod-b"
    assert fine[2].reason == f"{a} answered as 'pod-a', expected pod-z"
    assert "Connection refused" in fine[3].reason
    for case in lost:  # the failed call fails its own cases, with the agent's reason
        assert case.reason == "StepError: n3: agent probe-many s3 failed: no pod named x"
    assert all(c.latency_ms > 0 for c in [*fine[:3], fine[4], fine[5], own])
    sent = json.loads(next(argv for c, argv in fake.calls if c == "n1")[-1])
    assert [t["url"] for t in sent] == [c.url for c in fine[:4]]
    assert {t["count"] for t in sent} == {PROBE_COUNT}
