"""Weave Net: weaver per node run directly (weave-kube's launch needs a kube API), weave-net CNI.

Per node, as the weave-net DaemonSet would run it with hostNetwork: one weaver container in the
node's network namespace with weave-kube launch.sh's flags, its database on a per-node volume
(the DaemonSet's hostPath /var/lib/weave), and a one-shot `weave --local setup-cni` that puts
weave-plugin-<version> plus the weave-net/weave-ipam links into the node's /opt/cni/bin.
weaver picks its datapath itself (fastdp where the openvswitch module exists, else the userspace
sleeve), so the only backend is `auto`, and `status` reports the one it chose.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from testbed.cluster.agent import probe_from
from testbed.cni.base import ClusterRef, Cni, NodeRef
from testbed.constants import LABEL_NODE, NODE_SECURITY_OPT
from testbed.errors import TestbedError, UserError
from testbed.images.catalog import ImageSpec
from testbed.images.gobuild import GoSource
from testbed.lifecycle.wait import TIMEOUTS
from testbed.networks import POD_NETWORKS
from testbed.provider.base import ContainerSpec, Provider
from testbed_contract.node import KERNEL_MODULE

DEFAULT_RANGE = POD_NETWORKS["weave"][0]
CONTROL_PORT = 6783
HTTP_ADDR = "127.0.0.1:6784"
DB_PREFIX = "/weavedb/weave-net"
CONN_LIMIT = 200
BRIDGE = "weave"
DATAPATHS = ("fastdp", "sleeve")
MODULE = "github.com/weaveworks/weave"
# weaveworks/weave is archived (2.8.1, 2021) and the maintained fork (github.com/rajch/weave
# 2.9.x) is not served by the module proxy here at any version; of weaveworks/weave the proxy
# serves only v2.6.5, a released version (June 2020), which predates Go modules (no go.mod,
# dependencies pinned by dep's Gopkg.lock). WEAVE_REQUIRES pins every dependency: Gopkg.lock's
# versions where the proxy serves them, else the nearest served version that compiles
# (docker/docker 2018-03-27, json-iterator v1.1.5 with reflect2 v1.0.2 for Go >= 1.18,
# Kubernetes 1.11-era api/apimachinery beside client-go v8).
DEFAULT_RELEASE = "v2.6.5"
WEAVE_REQUIRES: tuple[tuple[str, str], ...] = (
    ("github.com/andybalholm/go-bit", "v1.0.1"),
    ("github.com/aws/aws-sdk-go", "v1.13.22"),
    ("github.com/boltdb/bolt", "v1.3.1"),
    ("github.com/containernetworking/cni", "v0.5.2"),
    ("github.com/coreos/go-iptables", "v0.3.0"),
    ("github.com/docker/docker", "v1.4.2-0.20180327123150-ed7b6428c133"),
    ("github.com/docker/libnetwork", "v0.8.0-dev.2.0.20180212220201-119badbd737b"),
    ("github.com/fsouza/go-dockerclient", "v1.2.0"),
    ("github.com/google/gopacket", "v1.1.16"),
    ("github.com/gorilla/mux", "v1.6.1"),
    ("github.com/j-keck/arping", "v0.0.0-20160618110441-2cf9dc699c56"),
    ("github.com/mdlayher/raw", "v0.0.0-20181016155347-fa5ef3332ca9"),
    ("github.com/miekg/dns", "v1.0.4"),
    ("github.com/modern-go/reflect2", "v1.0.2"),
    ("github.com/pkg/errors", "v0.8.0"),
    ("github.com/pkg/profile", "v1.2.1"),
    ("github.com/prometheus/client_golang", "v0.0.0-20180328130430-f504d69affe1"),
    ("github.com/sirupsen/logrus", "v1.0.4"),
    ("github.com/vishvananda/netlink", "v1.0.0"),
    ("github.com/vishvananda/netns", "v0.0.0-20171111001504-be1fbeda1936"),
    ("github.com/weaveworks/common", "v0.0.0-20180321110636-ebab3a78900a"),
    ("github.com/weaveworks/go-checkpoint", "v0.0.0-20170503165305-ebbb8b0518ab"),
    ("github.com/weaveworks/go-odp", "v0.0.0-20181017121109-6b0aa22550d9"),
    ("github.com/weaveworks/mesh", "v0.0.0-20191105120815-58dbcc3e8e63"),
    ("golang.org/x/crypto", "v0.0.0-20191002192127-34f69633bfdc"),
    ("golang.org/x/sys", "v0.0.0-20190412213103-97732733099d"),
    ("k8s.io/api", "v0.0.0-20180712090710-2d6f90ab1293"),
    ("k8s.io/apimachinery", "v0.0.0-20180621070125-103fd098999d"),
    ("k8s.io/client-go", "v8.0.0+incompatible"),
    ("github.com/Azure/go-ansiterm", "v0.0.0-20170929234023-d6e3b3328b78"),
    ("github.com/Microsoft/go-winio", "v0.4.7"),
    ("github.com/Nvveen/Gotty", "v0.0.0-20120604004816-cd527374f1e5"),
    ("github.com/beorn7/perks", "v0.0.0-20180321164747-3a771d992973"),
    ("github.com/containerd/continuity", "v0.0.0-20180322171221-3e8f2ea4b190"),
    ("github.com/davecgh/go-spew", "v1.1.0"),
    ("github.com/docker/distribution", "v2.6.0-rc.1.0.20180327202408-83389a148052+incompatible"),
    ("github.com/docker/go-connections", "v0.3.0"),
    ("github.com/docker/go-units", "v0.3.2"),
    ("github.com/ghodss/yaml", "v1.0.0"),
    ("github.com/go-ini/ini", "v1.33.0"),
    ("github.com/gogo/protobuf", "v1.0.0"),
    ("github.com/golang/glog", "v0.0.0-20160126235308-23def4e6c14b"),
    ("github.com/golang/protobuf", "v1.0.0"),
    ("github.com/google/gofuzz", "v0.0.0-20170612174753-24818f796faf"),
    ("github.com/googleapis/gnostic", "v0.1.0"),
    ("github.com/gregjones/httpcache", "v0.0.0-20180305231024-9cad4c3443a7"),
    ("github.com/hashicorp/go-cleanhttp", "v0.0.0-20171218145408-d5fe4b57a186"),
    ("github.com/hashicorp/golang-lru", "v0.0.0-20180201235237-0fb14efe8c47"),
    ("github.com/jmespath/go-jmespath", "v0.0.0-20160202185014-0b12d6b521d8"),
    ("github.com/json-iterator/go", "v1.1.5"),
    ("github.com/matttproud/golang_protobuf_extensions", "v1.0.0"),
    ("github.com/modern-go/concurrent", "v0.0.0-20180306012644-bacd9c7ef1dd"),
    ("github.com/opencontainers/go-digest", "v1.0.0-rc1"),
    ("github.com/opencontainers/image-spec", "v1.0.1"),
    ("github.com/opencontainers/runc", "v0.1.1"),
    ("github.com/pborman/uuid", "v0.0.0-20170612153648-e790cca94e6c"),
    ("github.com/peterbourgon/diskv", "v2.0.1+incompatible"),
    ("github.com/prometheus/client_model", "v0.0.0-20171117100541-99fa1f4be8e5"),
    ("github.com/prometheus/common", "v0.0.0-20180326160409-38c53a9f4bfc"),
    ("github.com/prometheus/procfs", "v0.0.0-20180321230812-780932d4fbbe"),
    ("golang.org/x/net", "v0.0.0-20190404232315-eb5bcb51f2a3"),
    ("golang.org/x/text", "v0.3.0"),
    ("gopkg.in/inf.v0", "v0.9.1"),
    ("gopkg.in/yaml.v2", "v2.2.2"),
    ("github.com/google/btree", "v0.0.0-20180124185431-e89373fe6b4a"),
    ("golang.org/x/time", "v0.0.0-20180412165947-fbb02b2291d2"),
)


def weave_source(release: str, module: str = MODULE) -> GoSource:
    """weaver and weaveutil as weave's Makefile builds them: cgo (libpcap), version ldflag."""
    if module == MODULE and release != DEFAULT_RELEASE:
        raise UserError(f"weave {release} is not served by the module proxy here: "
                        f"{DEFAULT_RELEASE} is the only weaveworks/weave release it serves")
    version = f"{release}+incompatible" if module == MODULE else release
    # Weave's Makefile also links -extldflags -static; Debian's static libpcap needs libdbus
    # and libsystemd, which have no static archives, so weaver links libpcap dynamically
    # (the image installs libpcap0.8).
    return GoSource(
        name="weave", module=module, version=version, release=release,
        binaries=(("prog/weaver", "weaver"), ("prog/weaveutil", "weaveutil")), cgo=True,
        ldflags="-X main.version={release_bare} -s -w", tags=("osusergo", "netgo"),
        requires=WEAVE_REQUIRES if module == MODULE else (), tidy=module != MODULE,
        files=(("weave", "weave"),),
    )


def peer_name(cluster: str, node: str) -> str:
    """A stable, unique, locally administered unicast MAC for weaver's --name.

    Node containers on one host share machine ids, so upstream's default (the bridge MAC, or
    one derived from the machine id) could collide; a hash of cluster and node names cannot.
    """
    b = bytearray(hashlib.sha256(f"{cluster}/{node}".encode()).digest()[:6])
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def weaver_args(cluster: ClusterRef, node: NodeRef) -> list[str]:
    """weaver's command line as weave-kube's launch.sh gives it (no --expect-npc: no weave-npc
    without a kube API), then the other nodes as peers."""
    args = [
        "--port=6783",
        "--datapath=datapath",
        f"--name={peer_name(cluster.name, node.name)}",
        f"--nickname={node.name}",
        f"--http-addr={HTTP_ADDR}",
        "--docker-api=",  # the shell's --docker-api='' : no Docker API
        "--no-dns",
        f"--db-prefix={DB_PREFIX}",
        f"--ipalloc-range={cluster.options.get('pod_cidr') or DEFAULT_RANGE}",
        "--ipalloc-init", f"consensus={len(cluster.nodes)}",
        f"--conn-limit={CONN_LIMIT}",
    ]
    if cluster.options.get("mtu"):
        args.append(f"--mtu={int(cluster.options['mtu'])}")
    return args + [n.ip for n in sorted(cluster.nodes, key=lambda n: n.index)
                   if n.name != node.name]


def parse_report(doc: dict[str, Any]) -> dict[str, Any]:
    """The `status` facts of one node from weaver's JSON report."""
    router = doc.get("Router") or {}
    conns = router.get("Connections") or []
    states = Counter(str(c.get("State", "")) for c in conns)
    established = [c for c in conns if c.get("State") == "established"]
    used = Counter(str((c.get("Attrs") or {}).get("name") or "") for c in established)
    used.pop("", None)
    iface = str(router.get("Interface") or "")
    datapath = str(router.get("Datapath") or "")
    if not datapath and used:
        datapath = used.most_common(1)[0][0]
    if not datapath:
        datapath = "fastdp" if "ODP" in iface else "sleeve" if "pcap" in iface else "unknown"
    ipam = doc.get("IPAM") or {}
    me = router.get("Name", "")
    owned = sum(int(e.get("Size", 0)) for e in ipam.get("Entries") or [] if e.get("Peer") == me)
    return {
        "peer_name": me,
        "nickname": router.get("NickName", ""),
        "version": doc.get("Version", ""),
        "datapath": datapath,
        "peers": sorted(str(p.get("NickName") or p.get("Name")) for p in router.get("Peers") or []),
        "connections": dict(sorted(states.items())),
        "established": sorted(
            str(c.get("Info", "")).split()[-1] if c.get("Info") else str(c.get("Address"))
            for c in established),
        "ipam": {"status": _ipam_status(ipam), "range": ipam.get("Range", ""),
                 "owned_ips": owned, "active_ips": ipam.get("ActiveIPs", 0)} if ipam else None,
        "pod_cidr": ipam.get("Range", ""),
    }


KERNEL_PROBE = ("python3", "-m", KERNEL_MODULE)


def _detail(stdout: str) -> str:
    """The kernel probe's reason, from its one JSON line."""
    try:
        doc = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ""
    return str(doc.get("detail") or "") if isinstance(doc, dict) else ""


def _ipam_status(ipam: dict[str, Any]) -> str:
    if ipam.get("Entries"):
        return "ready"
    paxos = ipam.get("Paxos") or {}
    if paxos:
        return f"awaiting consensus (quorum: {paxos.get('Quorum')}, " \
               f"known: {paxos.get('KnownNodes')})"
    return "idle"


def parse_status_text(text: str) -> dict[str, str]:
    """`weave status` lines (`Key: value`) as a dict, for when only the text is available."""
    out: dict[str, str] = {}
    service = ""
    for line in text.splitlines():
        key, sep, value = line.strip().partition(": ")
        if not sep:
            continue
        if key == "Service":
            service = value
            continue
        out[f"{service}.{key}" if service and service != "router" else key] = value
    return out


class Weave(Cni):
    """Upstream's weaver flags with `--ipalloc-init consensus=<nodes>`; never --expect-npc."""

    name = "weave"
    backends = ("auto",)
    default_backend = "auto"
    datapaths = {"auto": "userspace sleeve (pcap capture in the weave router), or fastdp "
                         "where the kernel has Open vSwitch"}
    module = MODULE
    default_release = DEFAULT_RELEASE
    node_volumes = {"cni-bin": "/opt/cni/bin", "weavedb": "/var/lib/weave"}
    # Bridge `weave` exists once weaver has set up its datapath (upstream's launch.sh reads
    # its MAC from this file); weaver answers GET /status right after.
    ready_files = (f"/sys/class/net/{BRIDGE}/address",)
    has_ready_check = True
    conflist_name = "10-weave.conflist"
    default_pod_cidr = DEFAULT_RANGE

    def upstream_images(self, release: str) -> dict[str, str]:
        """The published weave image of this release (tags drop the leading v)."""
        return {"weave": f"docker.io/weaveworks/weave:{release.removeprefix('v')}"}

    def source_images(self, release: str, module: str) -> dict[str, ImageSpec]:
        """weaver, weaveutil and the weave script built here, in upstream's image layout."""
        return {"weave": ImageSpec(name="weave", role="cni", cni=self.name,
                                   go=(weave_source(release, module),))}

    def preflight(self, provider: Provider, cluster: str, node_image: str) -> None:
        """weaver creates its bridge by attaching a temporary `dummy` link to raise the
        bridge's MTU (net/bridge.go), on the sleeve and fastdp paths alike; without the
        kernel's dummy link type it exits at start. Try one in a throwaway container."""
        res = provider.run_once(ContainerSpec(
            name=f"{cluster}-weave-preflight", image=node_image, cluster=cluster,
            role="preflight", entrypoint=list(KERNEL_PROBE), command=["--link", "dummy"],
            network_mode="none", cap_add=["NET_ADMIN"]), timeout=TIMEOUTS.cni_probe)
        if res.exit_code != 0:
            why = [_detail(res.stdout) or (res.stderr or "failed").strip().splitlines()[-1]]
            raise UserError(
                f"weave {self.default_release}: weaver needs the kernel's dummy link type (it "
                f"sets its bridge MTU through a temporary dummy interface) and this engine's "
                f"kernel has none (creating one: {why[0]}); run weave on a "
                "kernel with CONFIG_DUMMY, or choose flannel or calico")

    def install_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """`weave --local setup-cni` into the node's /opt/cni/bin (the DaemonSet's job)."""
        return [ContainerSpec(
            name=f"{node.name}-install-weave-cni",
            image=cluster.images["weave"],
            cluster=cluster.name, role="cni",
            labels={LABEL_NODE: node.name},
            entrypoint=["/home/weave/weave"], command=["--local", "setup-cni"],
            network_mode="none",
            volumes={node.volumes["cni-bin"]: "/opt/cni/bin"},
        )]

    def daemon_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """weaver in the node's network namespace (hostNetwork), database on /weavedb."""
        return [ContainerSpec(
            name=f"{node.name}-weave",
            image=cluster.images["weave"],
            cluster=cluster.name, role="cni",
            labels={LABEL_NODE: node.name},
            entrypoint=["/home/weave/weaver"],
            command=weaver_args(cluster, node),
            # No update check: it would call checkpoint-api.weave.works from the node.
            env={"HOSTNAME": node.name, "CHECKPOINT_DISABLE": "1"},
            network_mode=f"container:{node.name}",
            volumes={node.volumes["weavedb"]: "/weavedb"},
            cap_add=["NET_ADMIN", "NET_RAW", "SYS_ADMIN"],
            security_opt=list(NODE_SECURITY_OPT),
            restart="on-failure",
        )]

    def conflist(self, cluster: ClusterRef, node: NodeRef) -> dict[str, Any]:
        """10-weave.conflist exactly as weave 2.6.5's `weave setup-cni` writes it (its plugin
        speaks CNI 0.1.0-0.3.0)."""
        return {
            "cniVersion": "0.3.0",
            "name": "weave",
            "plugins": [
                {"name": "weave", "type": "weave-net", "hairpinMode": True},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }

    def report(self, provider: Provider, node: str) -> dict[str, Any]:
        """weaver's JSON report, read inside the node (the API listens on 127.0.0.1); curl,
        as the report of a large cluster outgrows the probe's 64 KiB body cap."""
        res = provider.exec(node, ["curl", "-sS", "--max-time", "5", "-H",
                                   "Accept: application/json", f"http://{HTTP_ADDR}/report"])
        if res.exit_code != 0:
            raise TestbedError(f"{node}: weave API did not answer: "
                               f"{(res.stderr or res.stdout).strip()}")
        try:
            doc = json.loads(res.stdout)
        except ValueError as e:
            raise TestbedError(f"{node}: weave /report is not JSON: {res.stdout[:200]!r}") from e
        if not isinstance(doc, dict):
            raise TestbedError(f"{node}: weave /report is not a JSON object")
        return doc

    def ready(self, provider: Provider, node: str) -> bool:
        """GET /status answers 200 (upstream returns 503 until weaver is ready)."""
        return probe_from(provider, node, f"http://{HTTP_ADDR}/status", timeout=3)["status"] == 200

    def node_status(self, provider: Provider, node: str) -> dict[str, Any]:
        """Peers, connections, IPAM and the datapath weaver actually uses."""
        return parse_report(self.report(provider, node))

    def pod_cidr_note(self) -> str:
        """Weave's IPAM is cluster-wide: one flat range, split among the peers."""
        return "one cluster-wide range (--ipalloc-range), split among the peers by consensus"
