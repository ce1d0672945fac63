"""`calico-node -felix`: program this node's dataplane from etcd, level-triggered.

What felix does here, each sync (on any change under /calico/, and every RESYNC_S):
- writes /var/lib/calico/mtu (smallest host MTU minus the VXLAN overhead when VXLAN is on);
- configures every local workload interface (rp_filter, route_localnet, proxy_arp,
  proxy_delay 0, forwarding) and keeps its /32 routes `dev cali* scope link`;
- VXLAN (a pool with vxlanMode != Never): device vxlan.calico (FELIX_VXLANVNI 4096,
  FELIX_VXLANPORT 4789, learning off, the node's VTEP MAC recorded on its Node resource as
  spec.vxlanTunnelMACAddr), its spec.ipv4VXLANTunnelAddr/32, a permanent neighbour and FDB
  entry per remote VTEP, routes to remote blocks via their VTEP (onlink, proto 80) and a
  blackhole per local block (proto 80). With BGP, BIRD owns block routes instead.
- ipsets and iptables from rules.py (policy, profiles, nat-outgoing), by iptables-restore
  with the backend FELIX_IPTABLESBACKEND names;
- answers /liveness and /readiness on FELIX_HEALTHHOST:FELIX_HEALTHPORT (localhost:9099).
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from testbed.reference.calico import ipam, model, rules
from testbed.reference.etcdv3 import Etcd

MTU_FILE = "/var/lib/calico/mtu"
VXLAN_DEVICE = "vxlan.calico"
VXLAN_OVERHEAD = 50
RTPROT_BOOT = 3
RTPROT_FELIX = 80
RT_SCOPE_LINK = 253
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x2
RESYNC_S = 10.0
DEFAULT_MTU_IFACE_PATTERN = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)"
ACTIONS = {"DROP": "DROP", "RETURN": "RETURN", "ACCEPT": "ACCEPT"}


def log(msg: str, level: str = "INFO") -> None:
    """felix log line on stdout."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{level}][{os.getpid()}] felix {msg}",
          flush=True)


@dataclass
class Config:
    """Felix parameters: FELIX_* env, then FelixConfiguration node.<name>, then default."""

    hostname: str
    iptables_backend: str = "Auto"
    endpoint_to_host_action: str = "DROP"
    vxlan_vni: int = 4096
    vxlan_port: int = 4789
    vxlan_mtu: int = 0
    mtu_iface_pattern: str = DEFAULT_MTU_IFACE_PATTERN
    health_enabled: bool = False
    health_host: str = "localhost"
    health_port: int = 9099

    @classmethod
    def load(cls, env: dict[str, str], felix_configs: list[dict[str, Any]]) -> Config:
        """Merge env over datastore config (env wins, as in felix's config loader)."""
        name = env.get("FELIX_FELIXHOSTNAME") or env.get("NODENAME") or socket.gethostname()
        specs = {c["metadata"]["name"]: c.get("spec", {}) for c in felix_configs}
        merged: dict[str, Any] = {**specs.get("default", {}), **specs.get(f"node.{name}", {})}

        def get(key: str, spec_key: str, default: Any) -> Any:
            if f"FELIX_{key}" in env:
                return env[f"FELIX_{key}"]
            return merged.get(spec_key, default)

        return cls(
            hostname=name,
            iptables_backend=str(get("IPTABLESBACKEND", "iptablesBackend", "Auto")),
            endpoint_to_host_action=ACTIONS.get(
                str(get("DEFAULTENDPOINTTOHOSTACTION", "defaultEndpointToHostAction",
                        "Drop")).upper(), "DROP"),
            vxlan_vni=int(get("VXLANVNI", "vxlanVNI", 4096)),
            vxlan_port=int(get("VXLANPORT", "vxlanPort", 4789)),
            vxlan_mtu=int(get("VXLANMTU", "vxlanMTU", 0) or 0),
            mtu_iface_pattern=str(get("MTUIFACEPATTERN", "mtuIfacePattern",
                                      DEFAULT_MTU_IFACE_PATTERN)),
            health_enabled=str(get("HEALTHENABLED", "healthEnabled", "false")).lower() == "true",
            health_host=str(get("HEALTHHOST", "healthHost", "localhost")),
            health_port=int(get("HEALTHPORT", "healthPort", 9099)),
        )


@dataclass
class Snapshot:
    """One read of the datastore."""

    revision: int = 0
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # kind -> docs
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # cidr -> block

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Every resource of a kind."""
        return self.resources.get(kind, [])


def read_snapshot(etcd: Etcd) -> Snapshot:
    """All v3 resources and IPAM blocks."""
    snap = Snapshot()
    kvs, snap.revision = etcd.get_prefix(model.RESOURCES + "/")
    plural_to_kind = {v: k for k, v in model.PLURALS.items()}
    for kv in kvs:
        plural = kv.key[len(model.RESOURCES) + 1:].split("/", 1)[0]
        kind = plural_to_kind.get(plural)
        if kind:
            snap.resources.setdefault(kind, []).append(json.loads(kv.value))
    bkvs, _ = etcd.get_prefix(f"{model.IPAM}/assignment/ipv4/block/")
    for kv in bkvs:
        block = json.loads(kv.value)
        snap.blocks[block["cidr"]] = block
    return snap


def endpoints(snap: Snapshot) -> list[rules.Endpoint]:
    """Every workload endpoint with its labels inherited from profiles (endpoint wins)."""
    profiles = {p["metadata"]["name"]: p.get("spec", {}) for p in snap.of("Profile")}
    out = []
    for wep in snap.of("WorkloadEndpoint"):
        spec = wep.get("spec", {})
        labels: dict[str, str] = {}
        for prof in spec.get("profiles") or []:
            labels.update(profiles.get(prof, {}).get("labelsToApply") or {})
        labels.update(wep["metadata"].get("labels") or {})
        ns = wep["metadata"].get("namespace", model.DEFAULT_NAMESPACE)
        labels.setdefault(rules.NAMESPACE_LABEL, ns)
        out.append(rules.Endpoint(
            name=wep["metadata"]["name"], namespace=ns, node=spec.get("node", ""),
            iface=spec.get("interfaceName", ""), ips=tuple(spec.get("ipNetworks") or ()),
            labels=labels, profiles=tuple(spec.get("profiles") or ())))
    return out


def host_mtu(ifaces: list[tuple[str, int, bool]], pattern: str) -> int:
    """The smallest MTU of up interfaces matching MTUIfacePattern (1500 when none)."""
    mtus = [mtu for name, mtu, up in ifaces if up and re.match(pattern, name)]
    return min(mtus) if mtus else 1500


def pod_mtu(host: int, vxlan: bool, vxlan_mtu: int = 0) -> int:
    """determinePodMTU: the host MTU minus the overhead of each enabled encapsulation."""
    if vxlan:
        return vxlan_mtu or host - VXLAN_OVERHEAD
    return host


def vxlan_enabled(snap: Snapshot) -> bool:
    """Felix turns VXLAN on when any enabled IPv4 pool uses it."""
    return any(ipam.Pool.from_resource(p).vxlan_mode != "Never"
               and not ipam.Pool.from_resource(p).disabled for p in snap.of("IPPool"))


@dataclass(frozen=True)
class Vtep:
    """A node's VXLAN tunnel endpoint."""

    node: str
    node_ip: str
    tunnel_ip: str
    mac: str


def vteps(snap: Snapshot) -> dict[str, Vtep]:
    """VTEPs of every node that has a tunnel address, a MAC and a node IP."""
    out = {}
    for node in snap.of("Node"):
        spec = node.get("spec", {})
        cidr = (spec.get("bgp") or {}).get("ipv4Address", "")
        if cidr and spec.get("ipv4VXLANTunnelAddr") and spec.get("vxlanTunnelMACAddr"):
            name = node["metadata"]["name"]
            out[name] = Vtep(name, str(ipaddress.ip_interface(cidr).ip),
                             spec["ipv4VXLANTunnelAddr"], spec["vxlanTunnelMACAddr"])
    return out


def block_owner(block: dict[str, Any]) -> str:
    """`host:<node>` -> node."""
    aff = block.get("affinity") or ""
    return aff[5:] if aff.startswith("host:") else ""


class Dataplane:
    """The kernel side: netlink via pyroute2, iptables and ipset via their restore tools."""

    def __init__(self, cfg: Config) -> None:
        from pyroute2 import IPRoute

        self.cfg = cfg
        self.ipr = IPRoute()
        self.backend = self._detect_backend(cfg.iptables_backend)
        self.hooks_done = False

    # -- iptables / ipset ---------------------------------------------------------------------
    @staticmethod
    def _detect_backend(name: str) -> str:
        if name.lower() == "legacy":
            return "legacy"
        if name.lower() == "nft":
            return "nft"

        def count(tool: str) -> int:
            res = subprocess.run([tool], capture_output=True, text=True)
            return sum(1 for ln in res.stdout.splitlines() if ln.startswith("-"))

        return "legacy" if count("iptables-legacy-save") > count("iptables-nft-save") else "nft"

    def _ipt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([f"iptables-{self.backend}", "-w", *args], capture_output=True,
                              text=True)

    def existing_chains(self) -> dict[str, list[str]]:
        """User chains per table, from iptables-save."""
        out: dict[str, list[str]] = {}
        for table in ("filter", "nat"):
            res = subprocess.run([f"iptables-{self.backend}-save", "-t", table],
                                 capture_output=True, text=True)
            out[table] = [ln[1:].split()[0] for ln in res.stdout.splitlines()
                          if ln.startswith(":")]
        return out

    def apply_iptables(self, rs: rules.Ruleset) -> None:
        """Rewrite our chains in one transaction, then make sure the hooks are in place."""
        payload = rules.restore_payload(rs, self.existing_chains())
        res = subprocess.run([f"iptables-{self.backend}-restore", "-w", "--noflush"],
                             input=payload, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"iptables-restore failed: {res.stderr.strip()}")
        for table, chain, how, spec in rules.HOOKS:
            if self._ipt("-t", table, "-C", chain, *spec).returncode == 0:
                continue
            if how == "insert":
                self._ipt("-t", table, "-I", chain, "1", *spec)
            else:
                self._ipt("-t", table, "-A", chain, *spec)

    @staticmethod
    def current_ipsets() -> dict[str, set[str]]:
        """Members of every existing ipset."""
        res = subprocess.run(["ipset", "save"], capture_output=True, text=True)
        sets: dict[str, set[str]] = {}
        for ln in res.stdout.splitlines():
            parts = ln.split()
            if parts[:1] == ["create"]:
                sets.setdefault(parts[1], set())
            elif parts[:1] == ["add"] and len(parts) >= 3:
                sets.setdefault(parts[1], set()).add(_canonical_net(parts[2]))
        return sets

    def apply_ipsets(self, wanted: dict[str, set[str]]) -> list[str]:
        """Create or swap in every wanted set; returns stale cali40 sets to drop later."""
        have = self.current_ipsets()
        lines = []
        for name, members in sorted(wanted.items()):
            canon = {_canonical_net(m) for m in members}
            if name in have and have[name] == canon:
                continue
            tmp = "cali4t" + rules.short_hash(name, 20)
            lines.append(f"create {name} hash:net family inet maxelem 1048576 -exist")
            lines.append(f"create {tmp} hash:net family inet maxelem 1048576 -exist")
            lines.append(f"flush {tmp}")
            lines += [f"add {tmp} {m}" for m in sorted(canon)]
            lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
        if lines:
            res = subprocess.run(["ipset", "restore"], input="\n".join(lines) + "\n",
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"ipset restore failed: {res.stderr.strip()}")
        return [n for n in have if n.startswith("cali40") and n not in wanted]

    @staticmethod
    def destroy_ipsets(names: list[str]) -> None:
        """Drop sets no rule refers to any more (after the iptables rewrite)."""
        for name in names:
            subprocess.run(["ipset", "destroy", name], capture_output=True)

    # -- links and routes ----------------------------------------------------------------------
    def link_index(self, name: str) -> int | None:
        """Index of a link, None when absent."""
        found = self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def interfaces(self) -> list[tuple[str, int, bool]]:
        """(name, mtu, up) of every link."""
        return [(link.get_attr("IFLA_IFNAME"), int(link.get_attr("IFLA_MTU") or 0),
                 bool(link["flags"] & 1)) for link in self.ipr.get_links()]

    @staticmethod
    def sysctl(path: str, value: str) -> None:
        """Write a /proc/sys knob (start_runit makes /proc/sys writable in this container)."""
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            log(f"cannot write {path}: {e}", "WARNING")

    def configure_workload(self, iface: str, ips: tuple[str, ...]) -> bool:
        """endpoint_mgr configureInterface + the route table's /32 routes; False if absent."""
        index = self.link_index(iface)
        if index is None:
            return False
        for knob, value in (("rp_filter", "1"), ("route_localnet", "1"), ("proxy_arp", "1"),
                            ("forwarding", "1")):
            self.sysctl(f"/proc/sys/net/ipv4/conf/{iface}/{knob}", value)
        self.sysctl(f"/proc/sys/net/ipv4/neigh/{iface}/proxy_delay", "0")
        self.ipr.link("set", index=index, state="up")
        for ip in ips:
            if ipaddress.ip_interface(ip).version != 4:
                continue
            dst = str(ipaddress.ip_interface(ip).ip)
            self.ipr.route("replace", dst=f"{dst}/32", oif=index, scope=RT_SCOPE_LINK,
                           proto=RTPROT_BOOT)
        return True

    def ensure_vxlan(self, me: Vtep, parent_ip: str, mtu: int) -> int:
        """vxlan.calico with our VNI, port, VTEP MAC and address; returns its index."""
        parent = next((a["index"] for a in self.ipr.get_addr(family=socket.AF_INET)
                       if a.get_attr("IFA_ADDRESS") == parent_ip), None)
        index = self.link_index(VXLAN_DEVICE)
        if index is not None and not self._vxlan_matches(index, me, parent_ip, parent):
            log(f"{VXLAN_DEVICE} has the wrong parameters, recreating it")
            self.ipr.link("del", index=index)
            index = None
        if index is None:
            kw: dict[str, Any] = {"ifname": VXLAN_DEVICE, "kind": "vxlan",
                                  "vxlan_id": self.cfg.vxlan_vni,
                                  "vxlan_port": self.cfg.vxlan_port, "vxlan_local": parent_ip,
                                  "vxlan_learning": 0, "address": me.mac, "mtu": mtu}
            if parent is not None:
                kw["vxlan_link"] = parent
            self.ipr.link("add", **kw)
            index = self.link_index(VXLAN_DEVICE)
            assert index is not None
            log(f"created {VXLAN_DEVICE} vni={self.cfg.vxlan_vni} port={self.cfg.vxlan_port} "
                f"local={parent_ip} mac={me.mac} mtu={mtu}")
        link = self.ipr.get_links(index)[0]
        if int(link.get_attr("IFLA_MTU") or 0) != mtu:
            self.ipr.link("set", index=index, mtu=mtu)
        self.ipr.link("set", index=index, state="up")
        have = {a.get_attr("IFA_ADDRESS") for a in self.ipr.get_addr(index=index,
                                                                    family=socket.AF_INET)}
        for addr in have - {me.tunnel_ip}:
            self.ipr.addr("del", index=index, address=addr, prefixlen=32)
        if me.tunnel_ip not in have:
            self.ipr.addr("add", index=index, address=me.tunnel_ip, prefixlen=32)
        return index

    def _vxlan_matches(self, index: int, me: Vtep, local: str, parent: int | None) -> bool:
        link = self.ipr.get_links(index)[0]
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan" or data is None:
            return False
        return (data.get_attr("IFLA_VXLAN_ID") == self.cfg.vxlan_vni
                and data.get_attr("IFLA_VXLAN_PORT") == self.cfg.vxlan_port
                and data.get_attr("IFLA_VXLAN_LOCAL") == local
                and (parent is None or data.get_attr("IFLA_VXLAN_LINK") == parent)
                and str(link.get_attr("IFLA_ADDRESS")).lower() == me.mac.lower())

    def program_vteps(self, index: int, remote: list[Vtep]) -> None:
        """A permanent ARP entry and FDB entry per remote VTEP; stale ones removed."""
        want_neigh = {v.tunnel_ip: v.mac for v in remote}
        for n in self.ipr.get_neighbours(ifindex=index, family=socket.AF_INET):
            dst = n.get_attr("NDA_DST")
            if dst not in want_neigh and n["state"] & NUD_PERMANENT:
                self.ipr.neigh("del", ifindex=index, dst=dst, lladdr=n.get_attr("NDA_LLADDR"))
        for v in remote:
            self.ipr.neigh("replace", ifindex=index, dst=v.tunnel_ip, lladdr=v.mac,
                           state=NUD_PERMANENT)
        want_fdb = {(v.mac.lower(), v.node_ip) for v in remote}
        for f in self.ipr.fdb("dump", ifindex=index):
            mac, dst = str(f.get_attr("NDA_LLADDR")).lower(), f.get_attr("NDA_DST")
            if dst and (mac, dst) not in want_fdb:
                self.ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)
        for v in remote:
            self.ipr.fdb("replace", ifindex=index, lladdr=v.mac, dst=v.node_ip,
                         state=NUD_PERMANENT, flags=NTF_SELF)

    def program_block_routes(self, vxlan_index: int | None, local_blocks: list[str],
                             remote: dict[str, str]) -> None:
        """proto 80 routes: blackhole per local block, remote block via its VTEP."""
        want: dict[str, tuple[str, str]] = {c: ("blackhole", "") for c in local_blocks}
        if vxlan_index is not None:
            want |= {c: ("unicast", gw) for c, gw in remote.items()}
        for r in self.ipr.get_routes(family=socket.AF_INET, proto=RTPROT_FELIX):
            cidr = f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
            if cidr not in want:
                self.ipr.route("del", dst=cidr, proto=RTPROT_FELIX,
                               type="blackhole" if r["type"] == 6 else "unicast")
        for cidr, (kind, gw) in want.items():
            if kind == "blackhole":
                self.ipr.route("replace", dst=cidr, type="blackhole", proto=RTPROT_FELIX)
            else:
                self.ipr.route("replace", dst=cidr, gateway=gw, oif=vxlan_index,
                               flags=RTNH_F_ONLINK, proto=RTPROT_FELIX)

    def remove_vxlan(self) -> None:
        """No VXLAN pool any more: the device and our routes go."""
        index = self.link_index(VXLAN_DEVICE)
        if index is not None:
            self.ipr.link("del", index=index)
        self.program_block_routes(None, [], {})


def _canonical_net(member: str) -> str:
    net = ipaddress.ip_network(member, strict=False)
    return str(net)


def random_mac() -> str:
    """A random unicast, locally administered MAC for our VTEP."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


class Felix:
    """The sync loop and its health state."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.etcd = Etcd(env.get("ETCD_ENDPOINTS", "http://127.0.0.1:2379"))
        self.ready = False
        self.live = True
        self.cfg: Config | None = None
        self.dp: Dataplane | None = None
        self.mtu_written = 0

    def ensure_vtep_mac(self, snap: Snapshot, name: str) -> bool:
        """Record a MAC for our VTEP on our Node resource if it has none (True if written)."""
        for _ in range(ipam.CAS_RETRIES):
            kv = self.etcd.get(model.resource_key("Node", name))
            if kv is None:
                return False
            node = json.loads(kv.value)
            spec = node.setdefault("spec", {})
            if spec.get("vxlanTunnelMACAddr"):
                return False
            spec["vxlanTunnelMACAddr"] = random_mac()
            if ipam.put_if(self.etcd, kv.key, model.dumps(node), kv.mod_revision):
                log(f"recorded VXLAN tunnel MAC {spec['vxlanTunnelMACAddr']} on Node {name}")
                return True
        return False

    def sync(self, snap: Snapshot) -> bool:
        """Bring the dataplane in line with one snapshot; False when it must run again."""
        cfg = Config.load(self.env, snap.of("FelixConfiguration"))
        if self.dp is None or self.cfg is None or cfg.iptables_backend != self.cfg.iptables_backend:
            self.dp = Dataplane(cfg)
        self.cfg = cfg
        dp = self.dp
        name = cfg.hostname
        vxlan = vxlan_enabled(snap)

        mtu = pod_mtu(host_mtu(dp.interfaces(), cfg.mtu_iface_pattern), vxlan, cfg.vxlan_mtu)
        if mtu != self.mtu_written:
            os.makedirs(os.path.dirname(MTU_FILE), exist_ok=True)
            with open(MTU_FILE + ".tmp", "w") as f:
                f.write(str(mtu))
            os.replace(MTU_FILE + ".tmp", MTU_FILE)
            self.mtu_written = mtu

        eps = endpoints(snap)
        local = [e for e in eps if e.node == name and e.iface]
        for ep in local:
            dp.configure_workload(ep.iface, ep.ips)

        all_vteps = vteps(snap)
        local_blocks = sorted(c for c, b in snap.blocks.items() if block_owner(b) == name)
        if vxlan:
            me = all_vteps.get(name)
            if me is None:
                if self.ensure_vtep_mac(snap, name):
                    return False  # the Node update wakes us up again
                log("waiting for this node's VXLAN tunnel address", "DEBUG")
                dp.program_block_routes(None, local_blocks, {})
            else:
                index = dp.ensure_vxlan(me, me.node_ip, mtu)
                remote = [v for n, v in sorted(all_vteps.items()) if n != name]
                dp.program_vteps(index, remote)
                routes = {c: all_vteps[block_owner(b)].tunnel_ip
                          for c, b in snap.blocks.items()
                          if block_owner(b) in all_vteps and block_owner(b) != name}
                dp.program_block_routes(index, local_blocks, routes)
        elif dp.link_index(VXLAN_DEVICE) is not None:
            dp.remove_vxlan()

        pools = [ipam.Pool.from_resource(p) for p in snap.of("IPPool")]
        policies = [rules.Policy.from_resource(p)
                    for p in snap.of("NetworkPolicy") + snap.of("GlobalNetworkPolicy")]
        profiles = {p["metadata"]["name"]: p for p in snap.of("Profile")}
        peers = sorted(v.node_ip for n, v in all_vteps.items() if n != name)
        rs = rules.build(local=local, all_endpoints=eps, profiles=profiles, policies=policies,
                         pools=[(p.cidr, p.nat_outgoing) for p in pools if not p.disabled],
                         vxlan=vxlan, vxlan_port=cfg.vxlan_port, vxlan_peers=peers,
                         to_host_action=cfg.endpoint_to_host_action)
        stale = dp.apply_ipsets(rs.ipsets)
        dp.apply_iptables(rs)
        dp.destroy_ipsets(stale)
        return True

    def serve_health(self) -> None:
        """/liveness and /readiness, like felix's health aggregator."""
        cfg = Config.load(self.env, [])
        if not cfg.health_enabled:
            return
        felix = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = felix.ready if self.path.startswith("/readiness") else felix.live
                body = model.dumps({"ready": felix.ready, "live": felix.live}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        host = "127.0.0.1" if cfg.health_host == "localhost" else cfg.health_host
        server = http.server.ThreadingHTTPServer((host, cfg.health_port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def run(self) -> int:
        """Sync forever; every change under /calico/ (or RESYNC_S) triggers a full sync."""
        self.serve_health()
        while True:
            try:
                snap = read_snapshot(self.etcd)
                if self.sync(snap) and not self.ready:
                    log("dataplane in sync")
                    self.ready = True
                self.etcd.wait_prefix("/calico/", snap.revision + 1, RESYNC_S)
            except Exception as err:
                log(f"sync failed, retrying: {err!r}", "ERROR")
                self.ready = False
                time.sleep(1)


def run(env: dict[str, str] | None = None) -> int:
    """Entry point for `calico-node -felix`."""
    return Felix(dict(os.environ if env is None else env)).run()
