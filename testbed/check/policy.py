"""policy-allow and policy-deny: enforced by a CNI's policy engine, or skipped with the reason."""

from __future__ import annotations

from testbed import cni as cnis
from testbed.check.cases import Case, World, http_port, pod_case
from testbed.provider.base import Provider
from testbed.scenario import NetworkPolicy
from testbed_contract.agent import PodRecord


def _selected(world: World, pol_labels: dict[str, str]) -> list[tuple[str, PodRecord]]:
    out = []
    for node, pods in world.pods_by_node.items():
        for pod in pods:
            labels = world.labels(pod["name"])
            if http_port(pod) and all(labels.get(k) == v for k, v in pol_labels.items()):
                out.append((node, pod))
    return out


def _cases(world: World, pol: NetworkPolicy) -> list[Case]:
    targets = _selected(world, pol.pod_selector.match_labels)
    if not targets:
        return [Case("policy-allow", "-", pol.name, reason=f"policy {pol.name} selects no pod")]
    dst_node, dst = targets[-1]
    allowed = [peer.pod_selector.match_labels for rule in pol.ingress for peer in rule.from_]
    ports = [p.port for rule in pol.ingress for p in rule.ports]
    port = ports[0] if ports else http_port(dst)
    everyone = [(n, p) for n, pods in world.pods_by_node.items() for p in pods
                if http_port(p) and p["name"] != dst["name"]]

    def matches(pod: str) -> bool:
        labels = world.labels(pod)
        return any(all(labels.get(k) == v for k, v in sel.items()) for sel in allowed)

    # Prefer sources on another node, so the policy is enforced across the dataplane.
    everyone.sort(key=lambda item: item[0] == dst_node)
    ok = next(((n, p) for n, p in everyone if matches(p["name"])), None)
    bad = next(((n, p) for n, p in everyone if not matches(p["name"])), None)
    cases = []
    if ok:
        case = pod_case("policy-allow", ok[0], ok[1], dst, port)
        cases.append(case)
    if bad:
        case = pod_case("policy-deny", bad[0], bad[1], dst, port)
        case.expect_blocked, case.expect_pods = True, ()
        cases.append(case)
    return cases


def policies(provider: Provider, world: World) -> list[Case]:
    """Allow and deny cases per policy; skipped (never passed) where the CNI enforces none."""
    if world.scenario is None or not world.scenario.network_policies:
        return [Case(p, "-", "-", reason="the scenario has no network policy")
                for p in ("policy-allow", "policy-deny")]
    cases = [c for pol in world.scenario.network_policies for c in _cases(world, pol)]
    module = cnis.REGISTRY.get(world.cluster.cni)
    if module is None or not module.enforces_policy:
        for c in cases:
            c.url, c.status = "", "skip"
            c.reason = (f"{world.cluster.cni} has no network policy engine: NetworkPolicy is "
                        "not enforced, so this case cannot pass")
    return cases


PLANNERS = [policies]
