"""Calico clusters on real Docker: BGP through BIRD, felix's VXLAN, routed /32 pods, etcd."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest
from conftest import Running, calico_scenario, cluster_name, run_cli, start

from testbed.cluster.agent import NodeAgent
from testbed.cni.calico import Calico, parse_bird_protocols, wep_name
from testbed.constants import LABEL_CLUSTER
from testbed.provider.docker import DockerProvider

pytestmark = pytest.mark.docker

RESOURCES = "/calico/resources/v3/projectcalico.org"
POOL = ipaddress.ip_network("10.48.0.0/16")


def _etcd(running: Running, *args: str) -> str:
    res = running.provider.exec(f"{running.name}-etcd", ["etcdctl", *args])
    assert res.exit_code == 0, res.stderr
    return res.stdout


def _etcd_json(running: Running, key: str) -> dict[str, object]:
    return dict(json.loads(_etcd(running, "get", key, "--print-value-only")))


def _exec(running: Running, container: str, *argv: str) -> str:
    res = running.provider.exec(container, list(argv))
    assert res.exit_code == 0, f"{argv}: {res.stderr}"
    return res.stdout


def _blocks(running: Running, node: str) -> list[str]:
    prefix = f"/calico/ipam/v2/host/{node}/ipv4/block/"
    keys = _etcd(running, "get", "--prefix", "--keys-only", prefix).split()
    return sorted(k[len(prefix):].replace("-", "/", 1) for k in keys)


def _routes(running: Running, node: str) -> list[dict[str, object]]:
    return list(json.loads(_exec(running, node, "ip", "-j", "route", "show")))


@pytest.mark.parametrize("fixture", ["calico_bgp", "calico_vxlan"])
def test_check_passes_every_path(fixture: str, request: pytest.FixtureRequest) -> None:
    running: Running = request.getfixturevalue(fixture)
    res = run_cli("check", running.name, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert (doc["cni"], doc["build"]) == ("calico", "source")
    assert doc["backend"] == fixture.split("_")[1]
    cases = doc["cases"]
    assert [c for c in cases if c["status"] == "fail"] == []
    cross = [c for c in cases if c["path"] == "pod-to-pod-cross-node"]
    assert len(cross) == 3 * 2 and all(c["status"] == "pass" for c in cross)
    assert all(c["status"] == "pass" for c in cases if c["path"] == "pod-to-pod-same-node")


def test_bgp_full_mesh_established_and_blocks_learned_through_bird(calico_bgp: Running) -> None:
    nodes = calico_bgp.ctx.nodes
    blocks = {n.name: _blocks(calico_bgp, n.name) for n in nodes}
    assert all(blocks.values()), blocks
    for node in nodes:
        out = _exec(calico_bgp, f"{node.name}-calico-node",
                    "birdcl", "-s", "/var/run/calico/bird.ctl", "show", "protocols")
        peers = {p["name"]: p["state"] for p in parse_bird_protocols(out)}
        others = {f"Mesh_{n.ip.replace('.', '_')}" for n in nodes if n.name != node.name}
        assert set(peers) == others
        assert set(peers.values()) == {"Established"}, out
        routes = _routes(calico_bgp, node.name)
        for other in nodes:
            for block in blocks[other.name]:
                found = [r for r in routes if r["dst"] == block]
                assert found, f"{node.name} has no route to {other.name}'s {block}"
                if other.name == node.name:
                    assert found[0]["type"] == "blackhole" and found[0]["protocol"] == "bird"
                else:
                    assert found[0]["protocol"] == "bird"
                    assert found[0]["gateway"] == other.ip and found[0]["dev"] == "eth0"
        # BIRD 2 must not copy interface routes into the kernel (BIRD 1.6 never does).
        assert not [r for r in routes if r.get("protocol") == "bird" and "gateway" not in r
                    and r.get("type") != "blackhole"]


def test_vxlan_device_vni_port_and_remote_vteps(calico_vxlan: Running) -> None:
    nodes = calico_vxlan.ctx.nodes
    node_docs = {n.name: _etcd_json(calico_vxlan, f"{RESOURCES}/nodes/{n.name}") for n in nodes}
    links = {}
    for node in nodes:
        (link,) = json.loads(_exec(calico_vxlan, node.name, "ip", "-d", "-j", "link", "show",
                                   "vxlan.calico"))
        links[node.name] = link
    for node in nodes:
        link = links[node.name]
        info = link["linkinfo"]["info_data"]
        assert (info["id"], info["port"], info["local"]) == (4096, 4789, node.ip)
        assert info.get("learning") is False
        spec = dict(node_docs[node.name]["spec"])  # type: ignore[arg-type]
        assert ipaddress.ip_address(spec["ipv4VXLANTunnelAddr"]) in POOL
        host_links = json.loads(_exec(calico_vxlan, node.name, "ip", "-j", "link", "show"))
        host_mtu = min(ln["mtu"] for ln in host_links if ln["ifname"].startswith("eth"))
        mtu_file = int(_exec(calico_vxlan, node.name, "cat", "/var/lib/calico/mtu"))
        assert mtu_file == link["mtu"] == host_mtu - 50  # VXLAN's IPv4 overhead
        routes = _routes(calico_vxlan, node.name)
        fdb = _exec(calico_vxlan, node.name, "bridge", "fdb", "show", "dev", "vxlan.calico")
        for other in nodes:
            if other.name == node.name:
                continue
            ospec = dict(node_docs[other.name]["spec"])  # type: ignore[arg-type]
            # felix programs each remote VTEP: the other node's device MAC at its node IP.
            assert f"{links[other.name]['address']} dst {other.ip} self permanent" in fdb
            for block in _blocks(calico_vxlan, other.name):
                (r,) = [r for r in routes if r["dst"] == block]
                assert r["dev"] == "vxlan.calico" and "onlink" in r.get("flags", [])
                assert r["gateway"] == ospec["ipv4VXLANTunnelAddr"]
        assert calico_vxlan.provider.exec(f"{node.name}-calico-node", [
            "test", "-S", "/var/run/calico/bird.ctl"]).exit_code != 0, "no BIRD with vxlan"


@pytest.mark.parametrize("fixture", ["calico_bgp", "calico_vxlan"])
def test_pods_are_routed_slash_32_behind_proxy_arp(fixture: str,
                                                   request: pytest.FixtureRequest) -> None:
    running: Running = request.getfixturevalue(fixture)
    node = running.ctx.nodes[0].name
    pods = NodeAgent(running.provider, node).pods()
    assert pods
    host_routes = _routes(running, node)
    for pod in pods:
        ns = ["ip", "netns", "exec", pod["name"]]
        (eth0,) = json.loads(_exec(running, node, *ns, "ip", "-j", "addr", "show", "eth0"))
        (addr,) = [a for a in eth0["addr_info"] if a["family"] == "inet"]
        assert addr["prefixlen"] == 32 and ipaddress.ip_address(addr["local"]) in POOL
        pod_routes = json.loads(_exec(running, node, *ns, "ip", "-j", "route", "show"))
        assert {"dst": "default", "gateway": "169.254.1.1", "dev": "eth0",
                "flags": []} in pod_routes
        veth = "cali" + str(pod["container_id"])[:11]
        (hr,) = [r for r in host_routes if r["dst"] == addr["local"]]
        assert hr["dev"] == veth and hr["scope"] == "link"
        assert _exec(running, node, "cat",
                     f"/proc/sys/net/ipv4/conf/{veth}/proxy_arp").strip() == "1"
        wep = _etcd_json(running, f"{RESOURCES}/workloadendpoints/default/"
                                  f"{wep_name(node, str(pod['container_id']))}")
        spec = dict(wep["spec"])  # type: ignore[arg-type]
        assert spec["ipNetworks"] == [f"{addr['local']}/32"]
        assert spec["interfaceName"] == veth and spec["orchestrator"] == "cni"
        assert spec["profiles"] == ["k8s-pod-network"]


def test_etcd_holds_upstreams_resources(calico_bgp: Running) -> None:
    pool = _etcd_json(calico_bgp, f"{RESOURCES}/ippools/default-ipv4-ippool")
    assert pool["spec"] == {  # type: ignore[comparison-overlap]
        "cidr": "10.48.0.0/16", "vxlanMode": "Never", "ipipMode": "Never", "natOutgoing": True,
        "blockSize": 26, "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic"}
    info = _etcd_json(calico_bgp, f"{RESOURCES}/clusterinformations/default")
    assert info["spec"]["datastoreReady"] is True  # type: ignore[index]
    for node in calico_bgp.ctx.nodes:
        doc = _etcd_json(calico_bgp, f"{RESOURCES}/nodes/{node.name}")
        bgp = doc["spec"]["bgp"]  # type: ignore[index]
        assert str(ipaddress.ip_interface(bgp["ipv4Address"]).ip) == node.ip
        assert _exec(calico_bgp, node.name, "cat", "/var/lib/calico/nodename") == node.name
        for block in _blocks(calico_bgp, node.name):
            value = _etcd_json(calico_bgp, "/calico/ipam/v2/assignment/ipv4/block/"
                                           + block.replace("/", "-"))
            assert value["affinity"] == f"host:{node.name}"
    handles = _etcd(calico_bgp, "get", "--prefix", "--keys-only", "/calico/ipam/v2/handle/")
    weps = _etcd(calico_bgp, "get", "--prefix", "--keys-only", f"{RESOURCES}/workloadendpoints/")
    pods = sum(len(NodeAgent(calico_bgp.provider, n.name).pods()) for n in calico_bgp.ctx.nodes)
    assert len(handles.split()) == len(weps.split()) == pods


def test_pod_delete_releases_address_endpoint_and_veth(calico_bgp: Running) -> None:
    node = calico_bgp.ctx.nodes[1].name
    agent = NodeAgent(calico_bgp.provider, node)
    pod = agent.pod_add("calico-tmp", ["app=sleep"])
    cid = str(pod["container_id"])
    ip = str(pod["ip"]).split("/")[0]
    handle = f"/calico/ipam/v2/handle/k8s-pod-network.{cid}"
    assert _etcd(calico_bgp, "get", handle, "--keys-only").strip() == handle
    agent.pod_del("calico-tmp")
    assert _etcd(calico_bgp, "get", handle, "--keys-only").strip() == ""
    key = f"{RESOURCES}/workloadendpoints/default/{wep_name(node, cid)}"
    assert _etcd(calico_bgp, "get", key, "--keys-only").strip() == ""
    assert not [r for r in _routes(calico_bgp, node) if r["dst"] == ip]
    links = _exec(calico_bgp, node, "ip", "-o", "link", "show")
    assert f"cali{cid[:11]}" not in links


def _probe(running: Running, src: str, url: str) -> bool:
    node = next(n.name for n in running.ctx.nodes
                if any(p["name"] == src for p in NodeAgent(running.provider, n.name).pods()))
    return bool(NodeAgent(running.provider, node).probe(src, url, 1, 2).get("ok"))


def test_felix_enforces_the_scenarios_network_policy(calico_vxlan: Running) -> None:
    scenario = calico_vxlan.ctx.scenario
    assert scenario.network_policies, "the default scenario guards app=guarded pods"
    labelled = Calico().apply_policies(calico_vxlan.provider, calico_vxlan.name, scenario)
    assert labelled == len(scenario.pods())
    guarded = next(p for n in calico_vxlan.ctx.nodes
                   for p in NodeAgent(calico_vxlan.provider, n.name).pods()
                   if p["name"].startswith("guarded"))
    url = f"http://{str(guarded['ip']).split('/')[0]}:8080/"
    key = f"{RESOURCES}/networkpolicies/default/knp.default.{scenario.network_policies[0].name}"
    try:
        deadline = time.monotonic() + 20
        while _probe(calico_vxlan, "echo-0", url) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _probe(calico_vxlan, "echo-0", url), "echo is not allowed in"
        assert not _probe(calico_vxlan, "echo-1", url)
        assert _probe(calico_vxlan, "client-0", url), "clients are allowed in"
        assert _probe(calico_vxlan, "client-1", url)
    finally:
        _etcd(calico_vxlan, "del", key)
    deadline = time.monotonic() + 20
    while not _probe(calico_vxlan, "echo-0", url) and time.monotonic() < deadline:
        time.sleep(1)
    assert _probe(calico_vxlan, "echo-0", url), "without the policy the profile allows all"


def test_down_leaves_no_labelled_object(provider: DockerProvider,
                                        built: dict[str, str]) -> None:
    running = start(provider, "cd", "calico:bgp", nodes=2, scenario=calico_scenario())
    assert running.name == cluster_name("cd")
    res = run_cli("down", running.name)
    assert res.returncode == 0, res.stdout + res.stderr
    flt = {"label": f"{LABEL_CLUSTER}={running.name}"}
    assert provider.client.containers.list(all=True, filters=flt) == []
    assert provider.client.networks.list(filters=flt) == []
    assert provider.client.volumes.list(filters=flt) == []


def test_restarted_calico_node_breaks_nothing(calico_bgp: Running) -> None:
    """calico/node restarted on one node: BGP sessions come back Established, every path
    passes again (the DaemonSet pod restarting, as on a rolling upgrade)."""
    p = calico_bgp.provider
    node = calico_bgp.ctx.nodes[2].name
    p.restart(f"{node}-calico-node")
    deadline = time.monotonic() + 90
    while not Calico().ready(p, node) and time.monotonic() < deadline:
        time.sleep(1)
    assert Calico().ready(p, node), "felix and BIRD ready again after the restart"
    while True:
        out = _exec(calico_bgp, f"{node}-calico-node",
                    "birdcl", "-s", "/var/run/calico/bird.ctl", "show", "protocols")
        states = {peer["state"] for peer in parse_bird_protocols(out)}
        if states == {"Established"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert states == {"Established"}, out
    res = run_cli("check", calico_bgp.name, "--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert [c for c in json.loads(res.stdout)["cases"] if c["status"] == "fail"] == []
