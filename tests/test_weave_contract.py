"""Weave's module against UPSTREAM.md, and the reference build's pure parts (no Docker)."""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed import cni as cnis
from testbed.cni.base import ClusterRef, NodeRef
from testbed.cni.weave import Weave, parse_report, parse_status_text, peer_name, weaver_args
from testbed.errors import UserError
from testbed.images import catalog
from testbed.reference.weave import VERSION, api, script, weaveutil
from testbed.reference.weave.ipam import Allocator, IpamError, split
from testbed.reference.weave.weaver import parse

WEAVEUTIL = Path(weaveutil.__file__)
UPSTREAM_CONFLIST = {  # UPSTREAM.md, Weave Net, `weave --local setup-cni`
    "cniVersion": "1.0.0", "name": "weave", "disableCheck": True,
    "plugins": [{"name": "weave", "type": "weave-net", "hairpinMode": True},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}],
}


def cluster(n: int = 3, **options: Any) -> ClusterRef:
    nodes = tuple(NodeRef(name=f"c-node-{i}", index=i, ip=f"172.30.0.{i + 1}",
                          volumes={"cni-bin": f"c-node-{i}-cni-bin",
                                   "weavedb": f"c-node-{i}-weavedb"})
                  for i in range(1, n + 1))
    return ClusterRef(name="c", network="c-net", backend="auto", etcd_endpoint="http://e:2379",
                      images={"weave": "img/weave:1"}, nodes=nodes, options=options)


# -- the module: names, images, specs, conflist ------------------------------------------------

def test_registered_as_plain_weave_with_one_auto_backend() -> None:
    module, backend = cnis.parse("weave")
    assert isinstance(module, Weave) and backend == "auto"
    with pytest.raises(UserError):
        cnis.parse("weave:sleeve")


def test_images_are_upstreams_weave_and_the_reference_stand_in() -> None:
    w = Weave()
    assert w.upstream_images == {"weave": "docker.io/weaveworks/weave:2.8.1"}
    assert w.reference_images == {"weave": "reference-weave"}
    spec = catalog.by_name("reference-weave")
    assert spec.folder == "weave" and spec.cni == "weave"
    assert spec.stands_in_for == "docker.io/weaveworks/weave"
    dockerfile = (Path(__file__).parent.parent / "images/weave/Dockerfile").read_text()
    assert "ARG BASE\nFROM ${BASE}" in dockerfile
    assert 'LABEL io.testbed.reference="weave"' in dockerfile
    assert "pyroute2==0.9.7" in dockerfile


def test_weaver_runs_with_exactly_upstreams_flags_then_the_other_nodes() -> None:
    c = cluster()
    node = c.nodes[1]
    args = weaver_args(c, node)
    assert args == [
        "--port=6783", "--datapath=datapath", f"--name={peer_name('c', node.name)}",
        f"--nickname={node.name}", "--http-addr=127.0.0.1:6784", "--docker-api=", "--no-dns",
        "--db-prefix=/weavedb/weave-net", "--ipalloc-range=10.32.0.0/12",
        "--ipalloc-init", "consensus=3", "--conn-limit=200", "172.30.0.2", "172.30.0.4"]
    assert not any("expect-npc" in a for a in args)


def test_options_set_range_and_mtu() -> None:
    args = weaver_args(cluster(2, pod_cidr="10.100.0.0/16", mtu=1400), cluster(2).nodes[0])
    assert "--ipalloc-range=10.100.0.0/16" in args and "--mtu=1400" in args
    assert args[args.index("--ipalloc-init") + 1] == "consensus=2"


def test_peer_names_are_stable_unique_unicast_macs() -> None:
    names = [peer_name("c", f"c-node-{i}") for i in range(1, 17)]
    assert len(set(names)) == 16
    assert names == [peer_name("c", f"c-node-{i}") for i in range(1, 17)]
    assert peer_name("other", "c-node-1") != names[0]
    for n in names:
        assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", n)
        first = int(n[:2], 16)
        assert first & 1 == 0 and first & 2 == 2  # unicast, locally administered


def test_daemon_spec_shares_the_node_namespace() -> None:
    c = cluster()
    node = c.nodes[0]
    (spec,) = Weave().daemon_specs(c, node)
    assert spec.name == "c-node-1-weave" and spec.image == "img/weave:1"
    assert spec.entrypoint == ["/home/weave/weaver"]
    assert spec.command == weaver_args(c, node)
    assert spec.network_mode == "container:c-node-1"
    assert spec.volumes == {"c-node-1-weavedb": "/weavedb"}
    assert {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"} <= set(spec.cap_add)
    assert spec.env["CHECKPOINT_DISABLE"] == "1"
    assert spec.role == "cni" and spec.labels["io.testbed.node"] == "c-node-1"


def test_install_runs_setup_cni_into_the_nodes_cni_bin() -> None:
    c = cluster()
    (spec,) = Weave().install_specs(c, c.nodes[0])
    assert spec.entrypoint == ["/home/weave/weave"]
    assert spec.command == ["--local", "setup-cni"]
    assert spec.volumes == {"c-node-1-cni-bin": "/opt/cni/bin"}
    assert spec.network_mode == "none"


def test_conflist_is_upstreams_and_names_the_weave_plugin() -> None:
    w = Weave()
    c = cluster()
    assert w.conflist(c, c.nodes[0]) == UPSTREAM_CONFLIST == script.CONFLIST
    assert w.conflist_name == "10-weave.conflist"
    assert w.ready_files == ("/sys/class/net/weave/address",)
    assert w.node_volumes["cni-bin"] == "/opt/cni/bin"


def test_the_reference_weaver_accepts_the_rendered_command_line() -> None:
    c = cluster()
    cfg = parse(weaver_args(c, c.nodes[0]))
    o = cfg.opts
    assert (o.port, o.datapath, o.http_addr, o.docker_api) == (6783, "datapath",
                                                               "127.0.0.1:6784", "")
    assert o.no_dns and not o.expect_npc and o.conn_limit == 200
    assert o.db_prefix == "/weavedb/weave-net" and o.ipalloc_range == "10.32.0.0/12"
    assert cfg.quorum == 3 and cfg.peers == ["172.30.0.3", "172.30.0.4"]
    assert cfg.set_flags["ipalloc-init"] == "consensus=3"


def test_weaver_refuses_ipam_flags_without_a_range() -> None:
    with pytest.raises(SystemExit):
        parse(["--ipalloc-init", "consensus=2"])


# -- IPAM --------------------------------------------------------------------------------------

def test_consensus_splits_the_range_evenly_by_sorted_peer_name() -> None:
    universe = ipaddress.IPv4Network("10.32.0.0/12")
    ring = split(universe, {"bb:00:00:00:00:02": "b", "aa:00:00:00:00:01": "a",
                            "cc:00:00:00:00:03": "c"})
    assert [e.nickname for e in ring] == ["a", "b", "c"]
    assert ring[0].start == int(universe.network_address)
    assert ring[-1].end == int(universe.broadcast_address) + 1
    assert all(a.end == b.start for a, b in itertools.pairwise(ring))
    sizes = [e.end - e.start for e in ring]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == universe.num_addresses


def test_allocation_waits_for_all_n_peers_then_hands_out_our_piece(tmp_path: Path) -> None:
    a = Allocator("10.32.0.0/12", "bb:00:00:00:00:02", "b", 3,
                  str(tmp_path / "weave-netdata.json"))
    assert not a.peers_known({"aa:00:00:00:00:01": "a"})
    with pytest.raises(IpamError, match="awaiting consensus") as e:
        a.allocate("c1", timeout=0.05)
    assert e.value.status == 503
    assert a.status()["Paxos"] == {"Elector": True, "Quorum": 3, "KnownNodes": 2}
    assert a.peers_known({"cc:00:00:00:00:03": "c"})
    mine = next(x for x in split(a.universe, dict(a.known)) if x.peer == a.name)
    first = a.allocate("c1")
    assert first == f"{ipaddress.IPv4Address(mine.start)}/12"
    assert a.allocate("c1") == first, "POST /ip/<id> is idempotent"
    second = a.allocate("c2")
    assert ipaddress.IPv4Interface(second).ip == ipaddress.IPv4Address(mine.start + 1)
    a.delete("c1")
    with pytest.raises(IpamError, match="Delete: no addresses for c1"):
        a.delete("c1")
    assert a.allocate("c3") == first, "released addresses are reused"
    again = Allocator("10.32.0.0/12", a.name, "b", 3, str(tmp_path / "weave-netdata.json"))
    assert again.ready() and again.lookup("c3") == [first] and again.lookup("c2") == [second]


def test_first_peer_skips_the_network_address_and_adopts_gossiped_rings() -> None:
    a = Allocator("10.32.0.0/12", "aa:00:00:00:00:01", "a", 2)
    b = Allocator("10.32.0.0/12", "bb:00:00:00:00:02", "b", 2)
    a.peers_known({"bb:00:00:00:00:02": "b"})
    ring = a.ring_doc()
    assert b.adopt(ring) and not b.adopt(ring)
    assert a.allocate("x") == "10.32.0.1/12"
    assert ipaddress.IPv4Interface(b.allocate("y")).ip == ipaddress.IPv4Address("10.40.0.0")
    with pytest.raises(ValueError):
        Allocator("10.0.0.0/8", "cc:00:00:00:00:03", "c", 2).adopt(ring)


def test_claims_and_subnet_allocations_stay_in_our_piece() -> None:
    a = Allocator("10.32.0.0/12", "aa:00:00:00:00:01", "a", 1)
    a.peers_known({})
    a.claim("weave:expose", "10.32.0.9/12")
    with pytest.raises(IpamError):
        a.claim("other", "10.32.0.9/12")
    assert a.allocate("s", "10.33.1.0/24") == "10.33.1.1/24"
    assert a.lookup("s", "10.33.1.0/24") == ["10.33.1.1/24"]
    assert a.status()["ActiveIPs"] == 1, "the bridge address is not a pod"


# -- status: what `status` shows, from upstream's report and the reference's -------------------

def _report(attrs_name: str | None, iface: str, datapath: str = "") -> dict[str, Any]:
    conn = {"Address": "172.30.0.3:6783", "Outbound": True, "State": "established",
            "Info": "fastdp 22:22:22:22:22:22(n2)",
            "Attrs": {"name": attrs_name, "mtu": 1376} if attrs_name else None}
    peer = {"Name": "11:11:11:11:11:11", "NickName": "n1", "UID": "1", "Version": 3,
            "Connections": [{"Name": "22:22:22:22:22:22", "NickName": "n2",
                             "Address": "172.30.0.3:6783", "Outbound": True,
                             "Established": True}]}
    router = {"Protocol": "weave", "ProtocolMinVersion": 1, "ProtocolMaxVersion": 2,
              "Encryption": False, "PeerDiscovery": True, "Name": "11:11:11:11:11:11",
              "NickName": "n1", "Targets": ["172.30.0.3"], "TrustedSubnets": [],
              "Connections": [conn, {"Address": "172.30.0.4:6783", "Outbound": True,
                                     "State": "retrying", "Info": "connect: refused",
                                     "Attrs": None}],
              "Peers": [peer, {**peer, "Name": "22:22:22:22:22:22", "NickName": "n2"}],
              "Interface": iface}
    if datapath:
        router["Datapath"] = datapath
    ipam = {"Paxos": None, "Range": "10.32.0.0/12", "RangeNumIPs": 1 << 20, "ActiveIPs": 2,
            "DefaultSubnet": "10.32.0.0/12", "PendingAllocates": [],
            "Entries": [{"Token": "10.32.0.0", "Size": 1 << 19, "Peer": "11:11:11:11:11:11",
                         "Nickname": "n1", "IsKnownPeer": True, "Version": 1},
                        {"Token": "10.40.0.0", "Size": 1 << 19, "Peer": "22:22:22:22:22:22",
                         "Nickname": "n2", "IsKnownPeer": True, "Version": 1}]}
    return {"Ready": True, "Version": "2.8.1", "Router": router, "IPAM": ipam}


@pytest.mark.parametrize(("attrs", "iface", "datapath", "want"), [
    ("fastdp", "datapath (via ODP)", "", "fastdp"),
    ("sleeve", "vethwe-pcap (via pcap)", "", "sleeve"),
    (None, "vethwe-pcap (via pcap)", "", "sleeve"),
    ("reference-vxlan", "vxlan-6784 (kernel VXLAN)", "reference-vxlan", "reference-vxlan"),
])
def test_node_status_reports_the_datapath_weaver_chose(attrs: str | None, iface: str,
                                                       datapath: str, want: str) -> None:
    st = parse_report(_report(attrs, iface, datapath))
    assert st["datapath"] == want
    assert st["connections"] == {"established": 1, "retrying": 1}
    assert st["established"] == ["22:22:22:22:22:22(n2)"]
    assert st["peers"] == ["n1", "n2"]
    assert st["ipam"] == {"status": "ready", "range": "10.32.0.0/12", "owned_ips": 1 << 19,
                          "active_ips": 2}


def test_status_text_follows_upstreams_template_and_parses_back() -> None:
    text = api.status_text(_report("sleeve", "vethwe-pcap (via pcap)"))
    assert "        Service: router\n       Protocol: weave 1..2\n" in text
    assert "    Connections: 2 (1 established, 1 retrying)\n" in text
    assert "          Peers: 2 (with 2 established connections)\n" in text
    assert "     Encryption: disabled\n  PeerDiscovery: enabled\n" in text
    fields = parse_status_text(text)
    assert fields["Name"] == "11:11:11:11:11:11(n1)"
    assert fields["ipam.Status"] == "ready" and fields["ipam.Range"] == "10.32.0.0/12"
    conns = api.connections_text(_report("fastdp", "x"))
    assert conns.splitlines()[0].split() == ["->", "172.30.0.3:6783", "established", "fastdp",
                                             "22:22:22:22:22:22(n2)", "mtu=1376"]
    assert "(50.0% of total) (2 active)" in api.ipam_text(_report("fastdp", "x"))


def test_awaiting_consensus_is_reported_like_upstream() -> None:
    ipam = {"Entries": [], "Paxos": {"Elector": True, "Quorum": 3, "KnownNodes": 1}}
    assert api.ipam_state(ipam) == "awaiting consensus (quorum: 3, known: 1)"


# -- weaveutil: the CNI plugin as the node runs it ---------------------------------------------

def test_setup_cni_installs_the_plugin_under_its_version_with_two_links(tmp_path: Path) -> None:
    (tmp_path / "net.d").mkdir()
    script.setup_cni(str(tmp_path / "bin"), str(tmp_path / "net.d"), str(WEAVEUTIL))
    plugin = tmp_path / "bin" / f"weave-plugin-{VERSION}"
    assert os.access(plugin, os.X_OK)
    for link in ("weave-net", "weave-ipam"):
        assert os.readlink(tmp_path / "bin" / link) == str(plugin)
    assert json.loads((tmp_path / "net.d/10-weave.conflist").read_text()) == UPSTREAM_CONFLIST
    assert script.setup_cni(str(tmp_path / "bin"), str(tmp_path / "net.d"),
                            str(WEAVEUTIL)) == [], "idempotent"
    assert WEAVEUTIL.read_text().startswith("#!/usr/bin/python3\n")


def test_plugin_answers_version_and_refuses_check_like_upstream(tmp_path: Path) -> None:
    script.setup_cni(str(tmp_path), str(tmp_path / "none"), str(WEAVEUTIL))
    net = tmp_path / "weave-net"
    res = subprocess.run([str(net)], input=b'{"cniVersion": "1.0.0"}', capture_output=True,
                         env={"CNI_COMMAND": "VERSION"}, check=False)
    assert res.returncode == 0
    assert "1.0.0" in json.loads(res.stdout)["supportedVersions"]
    res = subprocess.run([str(net)], input=b'{"cniVersion": "1.0.0"}', capture_output=True,
                         env={"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "abc",
                              "CNI_IFNAME": "eth0", "CNI_NETNS": "/x"}, check=False)
    assert res.returncode == 1
    assert json.loads(res.stdout)["msg"] == "CNI plugin check not implemented"


def test_plugin_reports_an_unreachable_router_as_cni_error_json(tmp_path: Path) -> None:
    script.setup_cni(str(tmp_path), str(tmp_path / "none"), str(WEAVEUTIL))
    res = subprocess.run([str(tmp_path / "weave-ipam")], input=b'{"cniVersion": "0.3.1"}',
                         capture_output=True, check=False,
                         env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abcdef",
                              "CNI_IFNAME": "eth0", "CNI_NETNS": "/x",
                              "WEAVE_HTTP_ADDR": "127.0.0.1:1", "WEAVE_WAIT_S": "0"})
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["cniVersion"] == "0.3.1" and doc["code"] == 999
    assert "is weave running?" in doc["msg"]


@pytest.mark.parametrize(("version", "want"), [
    ("1.0.0", {"cniVersion": "1.0.0", "ips": [{"address": "10.32.0.5/12",
                                               "gateway": "10.32.0.1"}], "dns": {}}),
    ("0.3.1", {"cniVersion": "0.3.1", "ips": [{"address": "10.32.0.5/12", "version": "4",
                                               "gateway": "10.32.0.1"}], "dns": {}}),
    ("0.2.0", {"cniVersion": "0.2.0", "ip4": {"ip": "10.32.0.5/12", "gateway": "10.32.0.1"},
               "dns": {}}),
])
def test_results_follow_the_requested_spec_version(version: str, want: dict[str, Any]) -> None:
    assert weaveutil._result(version, "10.32.0.5/12", "10.32.0.1", None, None) == want


def test_netlink_attributes_are_aligned_and_parse_back() -> None:
    raw = weaveutil._str(3, "vethwepl1234567") + weaveutil._u32(4, 1376)
    assert len(raw) % 4 == 0
    attrs = weaveutil.parse_attrs(raw)
    assert attrs[3] == b"vethwepl1234567\0" and int.from_bytes(attrs[4], sys.byteorder) == 1376
    nested = weaveutil._nested(18, weaveutil._str(1, "veth"))
    assert weaveutil.parse_attrs(nested)[18] == weaveutil._str(1, "veth")
