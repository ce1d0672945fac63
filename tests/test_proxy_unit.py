"""The service proxy without Docker: allocation, endpoints, kube-proxy's rules and their odds."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from testbed.check.services import requests_needed, spread_bound, spread_table
from testbed.errors import UserError
from testbed.scenario import Scenario, load
from testbed.services.allocate import allocate
from testbed_contract.registry import (
    CLUSTER_KEY,
    Endpoint,
    Pod,
    Registry,
    Service,
    ServicePort,
    pod_key,
    service_key,
    status_key,
)
from testbed_node import proxy
from testbed_node.readiness import ProbeState

ECHO = Service("echo", "10.96.0.10", {"app": "echo"},
               (ServicePort(port=80, target_port=8080, node_port=30080),), type="NodePort")


def registry(n: int = 3, ready: int | None = None, extra_pods: int = 0) -> Registry:
    """A registry with `n` echo pods (the first `ready` of them ready) and unselected others."""
    items: list[tuple[str, bytes | str]] = [
        (CLUSTER_KEY, json.dumps({"clusterCIDR": "10.244.0.0/16",
                                  "nodes": {"node-1": "172.18.0.2"}})),
        (service_key("echo"), json.dumps(ECHO.to_json())),
    ]
    for i in range(n + extra_pods):
        labels = {"app": "echo"} if i < n else {"role": "client"}
        pod = Pod(f"pod-{i}", f"node-{i % 3 + 1}", f"10.244.{i % 3 + 1}.{10 + i}", labels)
        items.append((pod_key(pod.name), json.dumps(pod.to_json())))
        is_ready = i < (n if ready is None else ready) or i >= n
        items.append((status_key(pod.name), json.dumps({"ready": is_ready})))
    return Registry.from_items(items, revision=7)


def rules_of(text: str, chain: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(f"-A {chain} ")]


# -- kube-proxy's names and odds -----------------------------------------------------------


def test_chain_hash_matches_kube_proxy() -> None:
    # From a real kube-proxy's iptables-save (service default/kubernetes-bootcamp-v1, unnamed
    # port, written by a version whose ServicePortName ended in ":"): the same sha256+base32.
    assert proxy.port_proto_hash("default/kubernetes-bootcamp-v1:", "tcp") == "RPP7DHNHMGOIIFDC"
    assert proxy.svc_chain("default/echo", "tcp") == "KUBE-SVC-" + proxy.port_proto_hash(
        "default/echo", "tcp")
    sep = proxy.sep_chain("default/echo", "tcp", "10.244.1.2:8080")
    assert re.fullmatch(r"KUBE-SEP-[A-Z2-7]{16}", sep) and len(sep) <= 28


def test_probabilities_are_one_over_remaining_and_give_equal_odds() -> None:
    assert [proxy.probability(k) for k in (4, 3, 2)] == ["0.2500000000", "0.3333333333",
                                                         "0.5000000000"]
    for n in (1, 2, 3, 6, 7, 100):
        odds = proxy.selection_odds(n)
        assert len(odds) == n
        assert all(abs(p - 1 / n) < 1e-9 for p in odds), (n, odds)


def test_the_rules_select_uniformly_when_simulated() -> None:
    # Walk KUBE-SVC's rules as the kernel does, with a seeded RNG: every endpoint ~1/n.
    text = proxy.render(registry(5)).restore_input()
    svc = proxy.svc_chain("default/echo", "tcp")
    jumps = [ln for ln in rules_of(text, svc) if "KUBE-SEP-" in ln]
    rng, hits = random.Random(1), Counter[str]()
    draws = 50_000
    for _ in range(draws):
        for ln in jumps:
            m = re.search(r"--probability (\S+)", ln)
            if m is None or rng.random() < float(m.group(1)):
                hits[ln.split("-j ")[-1]] += 1
                break
    assert len(hits) == 5
    assert all(abs(k / draws - 0.2) < spread_bound(5, draws) for k in hits.values()), hits


# -- the rendered tables -------------------------------------------------------------------


def test_rendered_chains_have_kube_proxys_structure() -> None:
    rs = proxy.render(registry(3))
    text = rs.restore_input()
    spn, svc = "default/echo", proxy.svc_chain("default/echo", "tcp")
    ext = proxy.ext_chain(spn, "tcp")
    seps = [proxy.sep_chain(spn, "tcp", f"10.244.{i + 1}.{10 + i}:8080") for i in range(3)]
    # KUBE-SERVICES: the ClusterIP rule, then the NodePort tail call last.
    services = rules_of(text, "KUBE-SERVICES")
    assert "-d 10.96.0.10 --dport 80" in services[0] and services[0].endswith(f"-j {svc}")
    assert "--dst-type LOCAL" in services[-1] and services[-1].endswith("-j KUBE-NODEPORTS")
    # KUBE-SVC: off-cluster masquerade first, then 1/3, 1/2, always.
    svc_rules = rules_of(text, svc)
    assert "! -s 10.244.0.0/16" in svc_rules[0] and svc_rules[0].endswith("-j KUBE-MARK-MASQ")
    assert [re.search(r"--probability (\S+)", r).group(1) if "statistic" in r else None
            for r in svc_rules[1:]] == ["0.3333333333", "0.5000000000", None]
    assert [r.split("-j ")[-1] for r in svc_rules[1:]] == seps
    # KUBE-SEP: hairpin masquerade, then DNAT to pod:targetPort.
    for i, sep in enumerate(seps):
        ip = f"10.244.{i + 1}.{10 + i}"
        sep_rules = rules_of(text, sep)
        assert sep_rules[0].endswith(f"-s {ip} -j KUBE-MARK-MASQ")
        assert sep_rules[1].endswith(f"-j DNAT --to-destination {ip}:8080")
    # NodePort -> EXT (mark for masquerade) -> SVC.
    assert rules_of(text, "KUBE-NODEPORTS")[0].endswith(f"--dport 30080 -j {ext}")
    assert [r.split("-j ")[-1] for r in rules_of(text, ext)] == ["KUBE-MARK-MASQ", svc]
    assert rules_of(text, "KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"]
    post = rules_of(text, "KUBE-POSTROUTING")
    assert "! --mark 0x4000/0x4000 -j RETURN" in post[0] and "MASQUERADE" in post[-1]
    assert any("--mark 0x4000/0x4000 -j ACCEPT" in r for r in rules_of(text, "KUBE-FORWARD"))
    assert rs.active_nat_chains == {svc, ext, *seps}
    # Whole chains replaced: every chain we write is declared (which flushes it) first.
    declared = set(re.findall(r"^:(\S+) ", text, re.M))
    assert {svc, ext, *seps, "KUBE-SERVICES", "KUBE-NODEPORTS"} <= declared


def test_only_ready_selected_pods_are_endpoints() -> None:
    reg = registry(4, ready=2, extra_pods=2)
    eps = reg.endpoints(ECHO, ECHO.ports[0])
    assert [e.pod for e in eps] == ["pod-0", "pod-1"]
    assert all(e.port == 8080 for e in eps)


def test_no_endpoints_rejects_like_kube_proxy() -> None:
    text = proxy.render(registry(3, ready=0)).restore_input()
    assert not any("KUBE-SVC-" in ln for ln in text.splitlines())
    filt = text.split("*nat")[0]
    assert "-A KUBE-SERVICES" in filt and "-d 10.96.0.10 --dport 80 -j REJECT" in filt
    assert "--dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT" in filt


def test_stale_chains_are_flushed_then_deleted_after_the_new_rules() -> None:
    rs = proxy.render(registry(2))
    text = rs.restore_input(["KUBE-SEP-OLDOLDOLDOLDOLDO", *rs.active_nat_chains])
    lines = text.splitlines()
    assert ":KUBE-SEP-OLDOLDOLDOLDOLDO - [0:0]" in lines
    assert lines.index("-X KUBE-SEP-OLDOLDOLDOLDOLDO") > max(
        i for i, ln in enumerate(lines) if ln.startswith("-A "))
    assert sum(ln.startswith("-X ") for ln in lines) == 1  # active chains are never deleted


def test_without_a_cluster_cidr_there_is_no_off_cluster_masquerade() -> None:
    reg = registry(2)
    reg.cluster = {}
    assert "! -s" not in proxy.render(reg).restore_input()


def test_jump_rules_hook_the_built_in_chains() -> None:
    hooks = {(j.table, j.chain, j.target) for j in proxy.JUMPS}
    assert {("nat", "PREROUTING", "KUBE-SERVICES"), ("nat", "OUTPUT", "KUBE-SERVICES"),
            ("nat", "POSTROUTING", "KUBE-POSTROUTING"),
            ("filter", "FORWARD", "KUBE-FORWARD")} <= hooks


# -- readiness -----------------------------------------------------------------------------


def test_readiness_flips_at_the_kubelet_thresholds() -> None:
    st = ProbeState()
    assert not st.ready
    st.record(True, "HTTP 200")
    assert st.ready
    st.record(False, "refused")
    st.record(False, "refused")
    assert st.ready, "two failures are below failureThreshold 3"
    st.record(False, "refused")
    assert not st.ready
    st.record(True, "HTTP 200")
    assert st.ready


# -- allocation ----------------------------------------------------------------------------


def _scenario(services: list[dict[str, object]]) -> Scenario:
    return Scenario.model_validate({
        "deployments": [{"name": "a", "labels": {"app": "a"}}],
        "services": services,
    })


def test_default_scenario_allocation_is_deterministic() -> None:
    first, second = allocate(load(None)), allocate(load(None))
    assert first == second
    by_name = {s.name: s for s in first}
    assert by_name["echo"].cluster_ip == "10.96.0.10"
    assert by_name["echo"].ports[0].node_port == 30080
    assert by_name["echo"].ports[0].target_port == 8080


def test_allocation_honours_explicit_addresses_and_ports() -> None:
    svcs = allocate(_scenario([
        {"name": "x", "type": "NodePort", "selector": {"app": "a"}, "ports": [{"port": 1}]},
        {"name": "y", "clusterIP": "10.96.0.10", "selector": {"app": "a"},
         "ports": [{"port": 2}]},
        {"name": "z", "type": "NodePort", "selector": {"app": "a"},
         "ports": [{"port": 3, "nodePort": 30000}, {"port": 4}]},
    ]))
    ips = [s.cluster_ip for s in svcs]
    assert ips == ["10.96.0.11", "10.96.0.10", "10.96.0.12"]
    assert [p.node_port for s in svcs for p in s.ports] == [30001, 0, 30000, 30002]
    assert [p.name for p in svcs[2].ports] == ["3", "4"], "multi-port services name ports"


def test_allocation_reports_an_exhausted_cidr() -> None:
    sc = _scenario([{"name": f"s{i}", "selector": {"app": "a"}, "ports": [{"port": 80}]}
                    for i in range(6)])
    sc.service_cidr = "10.96.0.0/28"  # .10 .. .14 usable
    with pytest.raises(UserError, match="no free ClusterIP"):
        allocate(sc)


# -- spread --------------------------------------------------------------------------------


def test_requests_needed_keeps_the_miss_odds_below_one_in_a_million() -> None:
    assert requests_needed(1, 6) == 76 and (5 / 6) ** 76 < 1e-6 < (5 / 6) ** 75
    assert requests_needed(2, 6) == 35
    assert requests_needed(6, 6) == 1 and requests_needed(0, 6) == 0


def test_spread_table_holds_fair_counts_and_flags_a_skewed_one() -> None:
    eps = [Endpoint(f"p{i}", "n", f"10.0.0.{i}", 80) for i in range(4)]
    fair = spread_table({"p0": 152, "p1": 148, "p2": 149, "p3": 151}, eps)
    assert fair.ok and fair.requests == 600
    assert abs(fair.rows[0].bound - 4 * (0.25 * 0.75 / 600) ** 0.5) < 1e-12
    skewed = spread_table({"p0": 300, "p1": 100, "p2": 100, "p3": 100}, eps)
    assert not skewed.ok and [r.ok for r in skewed.rows] == [False, False, False, False]
    missing = spread_table({"p0": 200, "p1": 200, "p2": 200}, eps)
    assert not missing.ok and missing.rows[3].hits == 0
    stray = spread_table({"p0": 150, "p1": 150, "p2": 150, "p3": 149, "gone": 1}, eps)
    assert not stray.ok and stray.strays == {"gone": 1}
