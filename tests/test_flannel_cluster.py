"""Flannel clusters on real Docker: cross-node pod traffic, upstream's etcd schema, devices."""

from __future__ import annotations

import base64
import ipaddress
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import Running, run_cli

from testbed.check.matrix import run
from testbed.cluster.agent import NodeAgent
from testbed.cluster.model import find

pytestmark = pytest.mark.docker


def _check(running: Running) -> list[dict[str, object]]:
    res = run_cli("check", running.name, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["cluster"] == running.name and doc["build"] == "source"
    return list(doc["cases"])


def _etcd(running: Running, *args: str) -> str:
    res = running.provider.exec(f"{running.name}-etcd", ["etcdctl", *args])
    assert res.exit_code == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("fixture", ["flannel_vxlan", "flannel_hostgw"])
def test_pods_reach_each_other_across_every_node_pair(fixture: str,
                                                       request: pytest.FixtureRequest) -> None:
    running: Running = request.getfixturevalue(fixture)
    cases = _check(running)
    cross = [c for c in cases if c["path"] == "pod-to-pod-cross-node"]
    same = [c for c in cases if c["path"] == "pod-to-pod-same-node"]
    assert len(cross) == 3 * 2, "every ordered pair of the three nodes"
    assert [c["status"] for c in cases if c["path"] == "container-to-container"] == ["pass"]
    assert len(same) == 3
    assert [c for c in cases if c["status"] == "fail"] == []
    assert all(c["status"] == "pass" for c in [*cross, *same])
    assert all(float(str(c["latency_ms"])) > 0 for c in [*cross, *same])
    skipped = [c for c in cases if c["status"] == "skip"]
    assert {c["path"] for c in skipped} == {"policy-allow", "policy-deny"}
    assert all("no network policy engine" in str(c["reason"]) for c in skipped)


def test_etcd_holds_one_upstream_lease_per_node(flannel_vxlan: Running) -> None:
    out = json.loads(_etcd(flannel_vxlan, "get", "--prefix", "/coreos.com/network/subnets",
                           "-w", "json"))
    kvs = out.get("kvs", [])
    node_ips = {n.ip for n in flannel_vxlan.ctx.nodes}
    assert len(kvs) == len(node_ips)
    seen = set()
    for kv in kvs:
        key = base64.b64decode(kv["key"]).decode()
        value = json.loads(base64.b64decode(kv["value"]))
        net = key.rsplit("/", 1)[-1].replace("-", "/")
        assert ipaddress.ip_network(net).subnet_of(ipaddress.ip_network("10.244.0.0/16"))
        assert ipaddress.ip_network(net).prefixlen == 24
        assert set(value) >= {"PublicIP", "BackendType", "BackendData"}
        assert value["BackendType"] == "vxlan"
        assert value["BackendData"]["VNI"] == 1
        assert len(value["BackendData"]["VtepMAC"].split(":")) == 6
        seen.add(value["PublicIP"])
        lease = kv.get("lease")
        assert lease, "a lease must hold the subnet"
        ttl = _etcd(flannel_vxlan, "lease", "timetolive", format(int(lease), "x"))
        granted = int(ttl.split("granted with TTL(")[1].split("s")[0])
        assert granted == 24 * 3600
    assert seen == node_ips


def test_vxlan_device_uses_upstreams_vni_and_port(flannel_vxlan: Running) -> None:
    for node in flannel_vxlan.ctx.nodes:
        res = flannel_vxlan.provider.exec(node.name, ["ip", "-d", "-j", "link", "show",
                                                      "flannel.1"])
        assert res.exit_code == 0, res.stderr
        info = json.loads(res.stdout)[0]["linkinfo"]
        assert info["info_kind"] == "vxlan"
        assert info["info_data"]["id"] == 1
        assert info["info_data"]["port"] == 8472
        env = flannel_vxlan.provider.exec(node.name, ["cat", "/run/flannel/subnet.env"]).stdout
        assert "FLANNEL_NETWORK=10.244.0.0/16" in env
        assert "FLANNEL_IPMASQ=true" in env


def test_host_gw_routes_via_node_ips(flannel_hostgw: Running) -> None:
    nodes = flannel_hostgw.ctx.nodes
    res = flannel_hostgw.provider.exec(nodes[0].name, ["ip", "-j", "route", "show"])
    routes = json.loads(res.stdout)
    gateways = {r.get("gateway") for r in routes if r["dst"].startswith("10.244.")}
    assert gateways >= {n.ip for n in nodes[1:]}
    link = flannel_hostgw.provider.exec(nodes[0].name, ["ip", "link", "show", "flannel.1"])
    assert link.exit_code != 0, "host-gw must not create a vxlan device"


def test_deleting_a_pod_frees_its_address(flannel_vxlan: Running) -> None:
    node = flannel_vxlan.ctx.nodes[0].name
    agent = NodeAgent(flannel_vxlan.provider, node)
    pod = agent.pod_add("scratch", ["app=http:8080"])
    ip = pod["ip"]
    store = flannel_vxlan.provider.exec(node, ["ls", "/var/lib/cni/networks/cbr0"]).stdout
    assert ip.split("/")[0] in store.split()
    agent.pod_del("scratch")
    store = flannel_vxlan.provider.exec(node, ["ls", "/var/lib/cni/networks/cbr0"]).stdout
    assert ip.split("/")[0] not in store.split()
    assert "scratch" not in [p["name"] for p in agent.pods()]
    agent.pod_del("scratch")  # DEL is idempotent


def test_restarted_flanneld_keeps_its_lease_and_pods_stay_reachable(
        flannel_vxlan: Running) -> None:
    p = flannel_vxlan.provider
    node = flannel_vxlan.ctx.nodes[1].name
    before = p.exec(node, ["cat", "/run/flannel/subnet.env"]).stdout
    p.restart(f"{node}-flannel")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = p.exec(node, ["cat", "/run/flannel/subnet.env"]).stdout
        if status and p.client.containers.get(f"{node}-flannel").status == "running":
            break
        time.sleep(0.5)
    assert p.exec(node, ["cat", "/run/flannel/subnet.env"]).stdout == before
    cluster = find(p, flannel_vxlan.name)
    deadline = time.monotonic() + 30
    while True:  # the restarted daemon re-syncs its routes; allow it a bounded moment
        cases = run(p, cluster)
        failing = [c for c in cases if c.status == "fail"]
        if not failing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert failing == []


def test_status_reports_every_node_with_its_pod_cidr(flannel_vxlan: Running) -> None:
    res = run_cli("status", flannel_vxlan.name, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["cni"] == "flannel" and doc["backend"] == "vxlan"
    cidrs = [n["pod_cidr"] for n in doc["nodes"]]
    assert len(doc["nodes"]) == 3 and len(set(cidrs)) == 3
    for n in doc["nodes"]:
        assert n["state"] == "running"
        assert [d["state"] for d in n["cni_daemons"]] == ["running"]
        for pod in n["pods"]:
            assert ipaddress.ip_interface(pod["ip"]) in ipaddress.ip_network(
                n["pod_cidr"], strict=False)


def test_check_writes_junit_and_reports_spread_within_its_bound(flannel_vxlan: Running,
                                                                 tmp_path: Path) -> None:
    junit = tmp_path / "check.xml"
    res = run_cli("check", flannel_vxlan.name, "--json", "--spread", "--junit", str(junit))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    doc = json.loads(res.stdout)
    suite = ET.parse(junit).getroot()
    assert int(suite.get("tests", "0")) == len(doc["cases"])
    assert int(suite.get("failures", "0")) == 0
    assert int(suite.get("skipped", "0")) == sum(c["status"] == "skip" for c in doc["cases"])
    spread = doc["spread"]
    assert spread["ok"] and spread["failures"] == 0
    assert len(spread["endpoints"]) == 6, "every echo replica is an endpoint"
    assert sum(r["hits"] for r in spread["endpoints"]) == spread["requests"]
    assert all(r["hits"] > 0 for r in spread["endpoints"])
