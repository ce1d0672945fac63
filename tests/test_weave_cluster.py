"""Weave Net clusters on real Docker: one flat L2 network, the peer mesh, IPAM, teardown."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from conftest import Running, run_cli, start

from testbed.cluster.agent import NodeAgent
from testbed.cni.weave import Weave
from testbed.constants import LABEL_CLUSTER

pytestmark = pytest.mark.docker

RANGE = ipaddress.ip_network("10.32.0.0/12")


def _sh(running: Running, node: str, *argv: str) -> str:
    res = running.provider.exec(node, list(argv))
    assert res.exit_code == 0, f"{argv}: {res.stderr}"
    return res.stdout


def _report(running: Running, node: str) -> dict[str, Any]:
    return Weave().report(running.provider, node)


def test_check_passes_every_case_including_cross_node(weave: Running) -> None:
    res = run_cli("check", weave.name, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert (doc["cni"], doc["backend"], doc["build"]) == ("weave", "auto", "reference")
    cases = doc["cases"]
    assert not [c for c in cases if c["status"] == "fail"], cases
    cross = [c for c in cases if c["path"] == "pod-to-pod-cross-node"]
    assert len(cross) == 3 * 2, "every ordered pair of the three nodes"
    for path in ("container-to-container", "pod-to-pod-same-node", "pod-to-pod-cross-node",
                 "pod-to-service", "pod-to-outside"):
        ran = [c for c in cases if c["path"] == path]
        assert ran and all(c["status"] == "pass" for c in ran), (path, ran)


def test_pods_on_every_node_share_one_subnet_and_hang_off_bridge_weave(weave: Running) -> None:
    cidrs = set()
    for node in weave.ctx.nodes:
        pods = NodeAgent(weave.provider, node.name).pods()
        assert pods, f"no pods on {node.name}"
        bridged = json.loads(_sh(weave, node.name, "ip", "-j", "link", "show", "master",
                                 "weave"))
        ports = {link["ifname"] for link in bridged}
        assert "vxlan-6784" in ports
        for pod in pods:
            addr = json.loads(_sh(weave, node.name, "ip", "-j", "-n", pod["name"], "addr",
                                  "show", "eth0"))[0]["addr_info"]
            v4 = next(a for a in addr if a["family"] == "inet")
            iface = ipaddress.ip_interface(f"{v4['local']}/{v4['prefixlen']}")
            assert iface.ip in RANGE and iface.network == RANGE, pod
            cidrs.add(str(iface.network))
            assert f"vethwepl{pod['container_id'][:7]}" in ports, (pod["name"], ports)
            route = _sh(weave, node.name, "ip", "-n", pod["name"], "route", "show", "default")
            gateway = route.split()[2]
            bridge = json.loads(_sh(weave, node.name, "ip", "-j", "addr", "show", "weave"))
            assert gateway in {a["local"] for a in bridge[0]["addr_info"]
                               if a["family"] == "inet"}, "default route via the bridge"
    assert cidrs == {str(RANGE)}


def test_every_node_has_two_established_peers_and_reports_its_datapath(weave: Running) -> None:
    module = Weave()
    for node in weave.ctx.nodes:
        st = module.node_status(weave.provider, node.name)
        assert st["connections"] == {"established": 2}, st
        assert st["datapath"] == "reference-vxlan"
        assert st["peers"] == sorted(n.name for n in weave.ctx.nodes)
        assert st["ipam"]["status"] == "ready"
        text = _sh(weave, node.name, "curl", "-s", "http://127.0.0.1:6784/status")
        assert "    Connections: 2 (2 established)" in text
        assert "          Peers: 3 (with 6 established connections)" in text
        assert "       Datapath: reference-vxlan" in text
        assert "     Encryption: disabled" in text
        logs = weave.provider.logs(f"{node.name}-weave", 200)
        assert 'Skipping bridge creation of "bridged_fastdp"' in logs
    status = json.loads(run_cli("status", weave.name, "--json").stdout)
    assert {n["datapath"] for n in status["nodes"]} == {"reference-vxlan"}


def test_vxlan_floods_to_every_other_node(weave: Running) -> None:
    ips = {n.ip for n in weave.ctx.nodes}
    for node in weave.ctx.nodes:
        link = json.loads(_sh(weave, node.name, "ip", "-d", "-j", "link", "show",
                              "vxlan-6784"))[0]
        data = link["linkinfo"]["info_data"]
        assert (data["id"], data["port"]) == (6784, 6784)
        assert link["master"] == "weave"
        fdb = json.loads(_sh(weave, node.name, "bridge", "-j", "fdb", "show", "dev",
                             "vxlan-6784"))
        flood = {e["dst"] for e in fdb if e["mac"] == "00:00:00:00:00:00"}
        assert flood == ips - {node.ip}


def test_consensus_gave_each_node_a_third_and_pods_come_from_their_nodes_piece(
        weave: Running) -> None:
    owners: dict[str, tuple[int, int]] = {}
    report = _report(weave, weave.ctx.nodes[0].name)
    entries = report["IPAM"]["Entries"]
    assert len(entries) == 3
    for e in entries:
        start = int(ipaddress.ip_address(e["Token"]))
        owners[e["Nickname"]] = (start, start + e["Size"])
        assert abs(e["Size"] - RANGE.num_addresses // 3) <= 1
    for node in weave.ctx.nodes:
        lo, hi = owners[node.name]
        for pod in NodeAgent(weave.provider, node.name).pods():
            assert lo <= int(ipaddress.ip_address(pod["ip"])) < hi, (node.name, pod)
        assert _report(weave, node.name)["IPAM"]["Entries"] == entries, "one ring everywhere"


def test_deleting_a_pod_releases_its_address_and_veth(weave: Running) -> None:
    node = weave.ctx.nodes[1].name
    agent = NodeAgent(weave.provider, node)
    pod = agent.pod_add("wv-extra", ["app=sleep"])
    owned = _report(weave, node)["IPAM"]["Owned"]
    assert owned[pod["container_id"]] == [f"{pod['ip']}/12"]
    agent.pod_del("wv-extra")
    assert pod["container_id"] not in _report(weave, node)["IPAM"]["Owned"]
    links = _sh(weave, node, "ip", "-br", "link")
    assert f"vethwepl{pod['container_id'][:7]}" not in links


def test_teardown_leaves_nothing_behind(built: dict[str, str]) -> None:
    from testbed.provider.docker import DockerProvider

    provider = DockerProvider()
    running = start(provider, "wd", "weave", nodes=2)
    weaver = provider.client.containers.get(f"{running.name}-node-1-weave")
    weaver.stop(timeout=10)
    weaver.reload()
    assert weaver.attrs["State"]["ExitCode"] == 0, "weaver exits cleanly on SIGTERM"
    res = run_cli("down", running.name)
    assert res.returncode == 0, res.stdout + res.stderr
    label = {"label": f"{LABEL_CLUSTER}={running.name}"}
    assert provider.client.containers.list(all=True, filters=label) == []
    assert provider.client.volumes.list(filters=label) == []
    assert provider.client.networks.list(filters=label) == []
