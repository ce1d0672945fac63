"""Weave's module against weave 2.6.5 upstream (prog/weave-kube/launch.sh, the `weave` script,
prog/weaver/Dockerfile.template, weaver's /report and status template), no Docker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from testbed import cni as cnis
from testbed.cni.base import ClusterRef, NodeRef
from testbed.cni.weave import (
    Weave,
    parse_report,
    parse_status_text,
    peer_name,
    weave_source,
    weaver_args,
)
from testbed.errors import UserError

# weave 2.6.5's `weave` script, create_cni_config with HAIRPIN_MODE's default (true).
UPSTREAM_CONFLIST = {
    "cniVersion": "0.3.0", "name": "weave",
    "plugins": [{"name": "weave", "type": "weave-net", "hairpinMode": True},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}],
}


def cluster(n: int = 3, images: dict[str, str] | None = None, **options: Any) -> ClusterRef:
    nodes = tuple(NodeRef(name=f"c-node-{i}", index=i, ip=f"172.30.0.{i + 1}",
                          volumes={"cni-bin": f"c-node-{i}-cni-bin",
                                   "weavedb": f"c-node-{i}-weavedb"})
                  for i in range(1, n + 1))
    return ClusterRef(name="c", network="c-net", backend="auto", etcd_endpoint="http://e:2379",
                      images=images or {"weave": "img/weave:1"}, nodes=nodes, options=options)


# -- the module: names, images, specs, conflist ------------------------------------------------

def test_registered_as_plain_weave_with_one_auto_backend() -> None:
    module, backend, version = cnis.parse("weave")
    assert isinstance(module, Weave) and backend == "auto" and version == ""
    assert cnis.parse("weave@v2.6.5")[1:] == ("auto", "v2.6.5")
    with pytest.raises(UserError):
        cnis.parse("weave:sleeve")


def test_upstream_image_is_weaves_tagged_without_the_v_and_only_images_change() -> None:
    w = Weave()
    # weave's Makefile tags weaveworks/weave with WEAVE_VERSION, which has no leading v.
    assert w.upstream_images("v2.6.5") == {"weave": "docker.io/weaveworks/weave:2.6.5"}
    up = cluster(images=w.upstream_images(w.default_release))
    src = cluster(images={"weave": "testbed/weave:x"})
    for render in (w.daemon_specs, w.install_specs):
        a, b = render(up, up.nodes[0])[0], render(src, src.nodes[0])[0]
        assert a.image != b.image
        a.image = b.image
        assert a == b, "the orchestrator does not branch on the build"


def test_source_build_is_weaver_and_weaveutil_as_weaves_makefile_builds_them() -> None:
    src = weave_source("v2.6.5")
    assert src.module == "github.com/weaveworks/weave" == Weave.module
    # v2 without a go.mod: the module proxy serves the tag as +incompatible.
    assert src.version == "v2.6.5+incompatible" and src.release == "v2.6.5"
    assert src.revision == "", "a tag, not a pseudo-version"
    assert src.binaries == (("prog/weaver", "weaver"), ("prog/weaveutil", "weaveutil"))
    # Makefile: CGO_ENABLED=1, -X main.version=$(WEAVE_VERSION) -s -w, -tags "osusergo netgo"
    assert src.cgo and "-X main.version={release_bare}" in src.ldflags
    assert set(src.tags) == {"osusergo", "netgo"}
    assert dict(src.files) == {"weave": "weave"}, "the weave script setup-cni runs"
    # Pre-modules: the wrapper pins every dependency (from Gopkg.lock) instead of tidying.
    assert not src.tidy and len(dict(src.requires)) == len(src.requires)
    # Gopkg.lock pins weaveworks/mesh (the /report format) at revision 58dbcc3e8e63.
    assert dict(src.requires)["github.com/weaveworks/mesh"].endswith("-58dbcc3e8e63")
    with pytest.raises(UserError, match=r"v2\.6\.5"):
        weave_source("v2.8.1")
    fork = weave_source("v2.9.0", "github.com/rajch/weave")
    assert (fork.version, fork.requires, fork.tidy) == ("v2.9.0", (), True)
    (spec,) = Weave().source_images("v2.6.5", Weave.module).values()
    assert (spec.name, spec.cni, spec.go) == ("weave", "weave", (src,))


def test_image_keeps_upstreams_layout_where_the_module_looks() -> None:
    """prog/weaver/Dockerfile.template: weave and weaver in /home/weave, weaveutil in /usr/bin
    (the script's install_cni_plugin copies /usr/bin/weaveutil), ENTRYPOINT weaver."""
    dockerfile = (Path(__file__).parent.parent / "images/weave/Dockerfile").read_text()
    assert "ARG BASE\nFROM ${BASE}" in dockerfile
    assert "COPY go/weave/weaver go/weave/files/weave /home/weave/\n" in dockerfile
    assert "COPY go/weave/weaveutil /usr/bin/weaveutil\n" in dockerfile
    assert 'ENTRYPOINT ["/home/weave/weaver"]' in dockerfile
    assert "/weavedb/weavedata.db" in dockerfile
    c = cluster()
    (daemon,) = Weave().daemon_specs(c, c.nodes[0])
    (install,) = Weave().install_specs(c, c.nodes[0])
    assert daemon.entrypoint == ["/home/weave/weaver"]
    assert install.entrypoint == ["/home/weave/weave"]


def test_weaver_runs_with_launch_sh_flags_then_the_other_nodes() -> None:
    """launch.sh's weaver line with its defaults (HTTP_ADDR, DB_PREFIX, CONN_LIMIT,
    IPALLOC_RANGE, consensus=<peer count>), minus --expect-npc: no weave-npc runs here."""
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
    assert args[-1] == "172.30.0.3", "the peers stay last"


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
    assert spec.command == weaver_args(c, node)
    assert spec.network_mode == "container:c-node-1"
    assert spec.volumes == {"c-node-1-weavedb": "/weavedb"}
    assert {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"} <= set(spec.cap_add)
    assert spec.env["CHECKPOINT_DISABLE"] == "1"
    assert spec.env["HOSTNAME"] == "c-node-1", "launch.sh's --nickname source"
    assert spec.role == "cni" and spec.labels["io.testbed.node"] == "c-node-1"


def test_install_runs_setup_cni_into_the_nodes_cni_bin() -> None:
    c = cluster()
    (spec,) = Weave().install_specs(c, c.nodes[0])
    # launch.sh's post_start_actions: `weave --local setup-cni`, which installs
    # weave-plugin-<version> into $HOST_ROOT/opt/cni/bin (HOST_ROOT unset: /opt/cni/bin).
    assert spec.command == ["--local", "setup-cni"]
    assert spec.volumes == {"c-node-1-cni-bin": "/opt/cni/bin"}
    assert spec.network_mode == "none"


def test_conflist_is_upstreams_and_names_the_weave_plugin() -> None:
    w = Weave()
    c = cluster()
    assert w.conflist(c, c.nodes[0]) == UPSTREAM_CONFLIST
    assert w.conflist_name == "10-weave.conflist"
    assert w.ready_files == ("/sys/class/net/weave/address",)
    assert w.node_volumes["cni-bin"] == "/opt/cni/bin"


# -- status: what `status` shows, from weaver's /report and `weave status` ----------------------

def _report(attrs_name: str | None, iface: str) -> dict[str, Any]:
    """weaver's GET /report (WeaveStatus): mesh.Status with Interface, ipam.Status."""
    conn = {"Address": "172.30.0.3:6783", "Outbound": True, "State": "established",
            "Info": f"{attrs_name or 'none':<6} 22:22:22:22:22:22(n2)",
            "Attrs": {"name": attrs_name, "mtu": 1376} if attrs_name else None}
    peer = {"Name": "11:11:11:11:11:11", "NickName": "n1", "UID": 1, "Version": 3,
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
    ipam = {"Paxos": None, "Range": "10.32.0.0/12", "RangeNumIPs": 1 << 20, "ActiveIPs": 2,
            "DefaultSubnet": "10.32.0.0/12", "PendingAllocates": [],
            "Entries": [{"Token": "10.32.0.0", "Size": 1 << 19, "Peer": "11:11:11:11:11:11",
                         "Nickname": "n1", "IsKnownPeer": True, "Version": 1},
                        {"Token": "10.40.0.0", "Size": 1 << 19, "Peer": "22:22:22:22:22:22",
                         "Nickname": "n2", "IsKnownPeer": True, "Version": 1}]}
    return {"Ready": True, "Version": "2.6.5", "Router": router, "IPAM": ipam}


@pytest.mark.parametrize(("attrs", "iface", "want"), [
    ("fastdp", "datapath (via ODP)", "fastdp"),          # fastDatapathForwarder.Attrs
    ("sleeve", "vethwe-pcap (via pcap)", "sleeve"),      # sleeveForwarder.Attrs
    (None, "vethwe-pcap (via pcap)", "sleeve"),          # no connection yet: the interface
    (None, "datapath (via ODP)", "fastdp"),
])
def test_node_status_reports_the_datapath_weaver_chose(attrs: str | None, iface: str,
                                                       want: str) -> None:
    st = parse_report(_report(attrs, iface))
    assert st["datapath"] == want
    assert st["version"] == "2.6.5" and st["nickname"] == "n1"
    assert st["connections"] == {"established": 1, "retrying": 1}
    assert st["established"] == ["22:22:22:22:22:22(n2)"]
    assert st["peers"] == ["n1", "n2"]
    assert st["ipam"] == {"status": "ready", "range": "10.32.0.0/12", "owned_ips": 1 << 19,
                          "active_ips": 2}
    assert st["pod_cidr"] == "10.32.0.0/12"


def test_awaiting_consensus_is_reported_like_upstreams_template() -> None:
    doc = _report("sleeve", "vethwe-pcap (via pcap)")
    doc["IPAM"] |= {"Entries": None, "Paxos": {"Elector": True, "Quorum": 3, "KnownNodes": 1}}
    assert parse_report(doc)["ipam"]["status"] == "awaiting consensus (quorum: 3, known: 1)"
    assert parse_report(doc)["ipam"]["owned_ips"] == 0
    doc["IPAM"]["Paxos"] = None
    assert parse_report(doc)["ipam"]["status"] == "idle"


# prog/weaver/http.go's statusTemplate, rendered for the report above.
STATUS_TEXT = """\
        Version: 2.6.5 (version check update disabled)

        Service: router
       Protocol: weave 1..2
           Name: 11:11:11:11:11:11(n1)
     Encryption: disabled
  PeerDiscovery: enabled
        Targets: 1
    Connections: 2 (1 established, 1 retrying)
          Peers: 2 (with 2 established connections)
 TrustedSubnets: none

        Service: ipam
         Status: ready
          Range: 10.32.0.0/12
  DefaultSubnet: 10.32.0.0/12
"""


def test_status_text_of_upstreams_template_parses_by_service() -> None:
    fields = parse_status_text(STATUS_TEXT)
    assert fields["Version"] == "2.6.5 (version check update disabled)"
    assert fields["Name"] == "11:11:11:11:11:11(n1)"
    assert fields["Protocol"] == "weave 1..2"
    assert fields["Connections"] == "2 (1 established, 1 retrying)"
    assert fields["TrustedSubnets"] == "none"
    assert fields["ipam.Status"] == "ready" and fields["ipam.Range"] == "10.32.0.0/12"
    assert "Status" not in fields and "Service" not in fields
