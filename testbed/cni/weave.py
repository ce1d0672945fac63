"""Weave Net: weaver per node run directly (weave-kube's launch needs a kube API), weave-net CNI.

Per node, as the weave-net DaemonSet would run it with hostNetwork: one weaver container in the
node's network namespace with upstream's flags (UPSTREAM.md), its database on a per-node volume
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

from testbed.cni.base import ClusterRef, Cni, NodeRef
from testbed.constants import LABEL_NODE, NODE_SECURITY_OPT
from testbed.errors import TestbedError
from testbed.images.catalog import ImageSpec
from testbed.images.gobuild import GoSource
from testbed.provider.base import ContainerSpec, Provider

DEFAULT_RANGE = "10.32.0.0/12"
CONTROL_PORT = 6783
HTTP_ADDR = "127.0.0.1:6784"
DB_PREFIX = "/weavedb/weave-net"
CONN_LIMIT = 200
BRIDGE = "weave"
DATAPATHS = ("fastdp", "sleeve")
MODULE = "github.com/weaveworks/weave"
# weaveworks/weave is archived (2.8.1, 2021) and the maintained fork (github.com/rajch/weave
# 2.9.x) is not served by the module proxy here at any version; of weaveworks/weave the proxy
# serves only v2.6.5, a released version (June 2020), which predates Go modules (no go.mod):
# its dependencies are pinned in WEAVE_REQUIRES, from its Gopkg.lock where the proxy serves
# those versions.
DEFAULT_RELEASE = "v2.6.5"
WEAVE_REQUIRES: tuple[tuple[str, str], ...] = ()


def weave_source(release: str, module: str = MODULE) -> GoSource:
    """weaver and weaveutil as weave's Makefile builds them: cgo (libpcap), version ldflag."""
    version = release if module != MODULE else f"{release}+incompatible"
    return GoSource(
        name="weave", module=module, version=version, release=release,
        binaries=(("prog/weaver", "weaver"), ("prog/weaveutil", "weaveutil")), cgo=True,
        ldflags="-X main.version={release}", requires=WEAVE_REQUIRES,
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
    """weaver's command line, exactly UPSTREAM.md's, then the other nodes as peers."""
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
        """10-weave.conflist as `weave setup-cni` writes it (UPSTREAM.md)."""
        return {
            "cniVersion": "1.0.0",
            "name": "weave",
            "disableCheck": True,
            "plugins": [
                {"name": "weave", "type": "weave-net", "hairpinMode": True},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }

    def report(self, provider: Provider, node: str) -> dict[str, Any]:
        """weaver's JSON report, read inside the node (the API listens on 127.0.0.1)."""
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
        res = provider.exec(node, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                   "--max-time", "3", f"http://{HTTP_ADDR}/status"])
        return res.exit_code == 0 and res.stdout.strip() == "200"

    def node_status(self, provider: Provider, node: str) -> dict[str, Any]:
        """Peers, connections, IPAM and the datapath weaver actually uses."""
        return parse_report(self.report(provider, node))

    def pod_cidr_note(self) -> str:
        """Weave's IPAM is cluster-wide: one flat range, split among the peers."""
        return "one cluster-wide range (--ipalloc-range), split among the peers by consensus"
