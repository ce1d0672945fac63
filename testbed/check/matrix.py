"""The connectivity matrix: planners propose cases for a cluster; cases run from pods or hosts."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import ValidationError

from testbed.check import edge, pods, policy, services
from testbed.check.cases import PATHS, Case, Planner, World, inventory
from testbed.cluster.agent import NodeAgent, probe_many_from
from testbed.cluster.etcd import ClusterEtcd
from testbed.cluster.model import Cluster
from testbed.errors import UserError
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider
from testbed.results.models import CheckCase, CheckReport
from testbed.scenario import Scenario
from testbed.validation import one_line
from testbed_contract.agent import ProbeReply, ProbeTarget
from testbed_contract.registry import SCENARIO_KEY

PROBE_COUNT = 3
PROBE_TIMEOUT = 3.0

PLANNERS: list[Planner] = [*pods.PLANNERS, *services.PLANNERS, *edge.PLANNERS,
                           *policy.PLANNERS]


def stored_scenario(provider: Provider, cluster: Cluster) -> Scenario | None:
    """The scenario `up` recorded in etcd (None for clusters made without one)."""
    if cluster.etcd is None:
        return None
    value = ClusterEtcd(provider, cluster.name).get(SCENARIO_KEY)
    if not value:
        return None
    try:
        return Scenario.model_validate_json(value)
    except ValidationError as e:  # recorded by an older testbed with looser rules
        raise UserError(one_line(Scenario, f"cluster {cluster.name}'s recorded scenario", e)
                        + " (recreate it: `python -m testbed down` then `up`)") from None


def plan(provider: Provider, world: World) -> list[Case]:
    """Every planner's cases, in the order of the path list."""
    cases = [c for planner in PLANNERS for c in planner(provider, world)]
    return sorted(cases, key=lambda c: PATHS.index(c.path) if c.path in PATHS else len(PATHS))


def source(case: Case) -> tuple[str, str]:
    """Where a case's probe runs: (node, pod), or ("", container) for a container's own netns."""
    if case.src_node:
        return case.src_node, case.src_pod or case.src
    return "", case.src_container


def batches(cases: list[Case]) -> list[list[Case]]:
    """What `execute` runs side by side, in the order first seen: the cases the default probe
    runs, one batch per source; each case with a runner of its own alone."""
    groups: dict[tuple[str, str], list[Case]] = {}
    for case in cases:
        if case.url:
            key = ("runner", str(id(case))) if case.runner else source(case)
            groups.setdefault(key, []).append(case)
    return list(groups.values())


def probe_batch(provider: Provider, batch: list[Case]) -> list[ProbeReply]:
    """One agent call probes every case of a batch (one source), concurrently at the source."""
    node, where = source(batch[0])
    targets = [ProbeTarget(url=c.url, count=PROBE_COUNT, timeout=PROBE_TIMEOUT,
                           headers=c.headers) for c in batch]
    if node:
        return NodeAgent(provider, node).probe_many(where, targets)
    return probe_many_from(provider, where, targets)


def judge(case: Case, res: ProbeReply) -> Case:
    """Decide pass/fail from a probe's answer and the case's expectations."""
    raw = res.get("body")
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    case.latency_ms = round(float(res.get("latency_ms") or 0.0), 3)
    if case.expect_blocked:
        if res.get("failures") == res.get("count") and not res.get("ok"):
            case.status, case.reason = "pass", f"{case.url} dropped as the policy requires"
        else:
            case.status = "fail"
            case.reason = f"{case.url} answered ({body.get('pod')}) but policy should deny"
        return case
    if case.expect_status:
        got = sorted({s.get("status") for s in res.get("samples", [])}, key=str)
        times = sorted(t for s in res.get("samples", []) if (t := s["latency_ms"]))
        case.latency_ms = round(float(times[len(times) // 2]), 3) if times else 0.0
        if got == [case.expect_status]:
            case.status, case.reason = "pass", f"{case.url} answered {case.expect_status}"
        else:
            case.status = "fail"
            case.reason = (f"{case.url} answered {got} ({res.get('error')}), expected "
                           f"{case.expect_status}")
        return case
    if not res.get("ok"):
        case.status = "fail"
        case.reason = f"{case.url}: {res.get('error') or 'status ' + str(res.get('status'))}"
    elif case.expect_pods and body.get("pod") not in case.expect_pods:
        case.status = "fail"
        case.reason = (f"{case.url} answered as {body.get('pod')!r}, expected "
                       f"{' or '.join(case.expect_pods)}")
    elif case.expect_client and body.get("client") != case.expect_client:
        case.status = "fail"
        case.reason = (f"{case.url} saw source {body.get('client')}, expected "
                       f"{case.expect_client}")
    else:
        seen = f" (source {body.get('client')})" if case.expect_client else ""
        case.status, case.reason = "pass", f"{case.url} -> {body.get('pod')}{seen}"
    return case


def _failed(case: Case, e: Exception) -> None:
    case.status, case.reason = "fail", f"{type(e).__name__}: {e}"


def execute(provider: Provider, cases: list[Case]) -> list[Case]:
    """Run every planned case, one agent call per source (a case with a runner: its own), the
    sources in parallel; skipped cases stay skipped."""

    def run_batch(batch: list[Case]) -> None:
        first = batch[0]
        try:
            replies = ([first.runner(provider, first)] if first.runner
                       else probe_batch(provider, batch))
        except Exception as e:  # an agent failure fails this call's cases, not the run
            for case in batch:
                _failed(case, e)
            return
        for case, res in zip(batch, replies, strict=True):
            try:
                judge(case, res)
            except Exception as e:
                _failed(case, e)

    parallel(run_batch, batches(cases), workers=6)
    return cases


def run(provider: Provider, cluster: Cluster) -> list[Case]:
    """Plan and execute the whole matrix for a cluster."""
    world = World(cluster, inventory(provider, cluster),
                  scenario=stored_scenario(provider, cluster))
    return execute(provider, plan(provider, world))


def report(cluster: Cluster, cases: list[Case]) -> dict[str, Any]:
    """`check --json`'s document (models.CheckReport; keys in testbed/results/SCHEMA.md)."""
    keys = set(CheckCase.model_fields)
    return CheckReport(
        cluster=cluster.name, cni=cluster.cni, backend=cluster.backend, build=cluster.build,
        cases=[CheckCase.model_validate({k: v for k, v in asdict(c).items() if k in keys})
               for c in cases],
    ).model_dump()
