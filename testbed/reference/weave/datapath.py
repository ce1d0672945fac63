"""The kernel side of weaver: bridge `weave`, the VXLAN datapath, iptables rules, expose.

Upstream tries the Open vSwitch datapath first (bridged_fastdp: bridge `weave` plus ODP
`datapath` joined by vethwe-bridge/vethwe-datapath, VXLAN vport `vxlan-6784`), and without the
openvswitch module falls back to a plain bridge with userspace sleeve capture on vethwe-pcap.
This build asks the kernel for the same generic-netlink family first, says so when it is
missing, and then carries frames in a kernel VXLAN device attached straight to the bridge.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2 import GenericNetlinkSocket, IPRoute
from pyroute2.netlink import genlmsg
from pyroute2.netlink.exceptions import NetlinkError

from testbed.reference.weave import BRIDGE, DATAPATH_NAME, VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI

ZERO_MAC = "00:00:00:00:00:00"
EEXIST, ENOENT, ESRCH = 17, 2, 3
Log = Callable[[str], None]


class DatapathError(Exception):
    """The bridge or the VXLAN device could not be set up."""


def fastdp_unavailable() -> str | None:
    """Why the Open vSwitch datapath cannot be used here, or None when it could be."""
    sock = GenericNetlinkSocket()
    try:
        sock.bind("ovs_datapath", genlmsg)
    except NetlinkError as e:
        return f"openvswitch kernel module unavailable (generic netlink family " \
               f"ovs_datapath: {e.args[-1] if e.args else e})"
    finally:
        sock.close()
    return None


@dataclass
class Bridge:
    """What weaver set up: the bridge and the VXLAN port, by name and index."""

    name: str
    index: int
    vxlan_index: int
    mtu: int
    datapath: str = DATAPATH_NAME

    def describe(self) -> str:
        """For `Bridge type is ...` and the report's Interface field."""
        return f"{VXLAN_DEVICE} (kernel VXLAN, VNI {VXLAN_VNI}, UDP {VXLAN_PORT})"


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def ensure_bridge(mac: str, mtu: int, name: str = BRIDGE) -> Bridge:
    """Bridge `weave` with MAC = peer name and the VXLAN port; idempotent across restarts."""
    with IPRoute() as ipr:
        try:
            br = _index(ipr, name)
            if br is None:
                ipr.link("add", ifname=name, kind="bridge")
                br = _index(ipr, name)
            assert br is not None
            kind = ipr.link("get", index=br)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if kind != "bridge":
                raise DatapathError(f"device {name!r} exists and is a {kind}, not a bridge: "
                                    "Existing bridge type is different than requested")
            vx = _index(ipr, VXLAN_DEVICE)
            if vx is None:
                ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=VXLAN_VNI,
                         vxlan_port=VXLAN_PORT, vxlan_learning=1)
                vx = _index(ipr, VXLAN_DEVICE)
            assert vx is not None
            ipr.link("set", index=vx, mtu=mtu)
            ipr.link("set", index=br, address=mac, mtu=mtu)
            ipr.link("set", index=vx, master=br)
            ipr.link("set", index=vx, state="up")
            ipr.link("set", index=br, state="up")
        except NetlinkError as e:
            raise DatapathError(f"creating bridge {name!r} with {VXLAN_DEVICE}: {e}") from e
    return Bridge(name=name, index=br, vxlan_index=vx, mtu=mtu)


def flood_to(bridge: Bridge, peer_ip: str, on: bool) -> None:
    """Add (or remove) the all-zero FDB entry that floods BUM frames to one peer."""
    with IPRoute() as ipr:
        try:
            ipr.fdb("append" if on else "del", ifindex=bridge.vxlan_index, lladdr=ZERO_MAC,
                    dst=peer_ip)
        except NetlinkError as e:
            if e.code not in (EEXIST, ENOENT):
                raise DatapathError(f"fdb {'append' if on else 'del'} {peer_ip}: {e}") from e


def flood_targets(bridge: Bridge) -> list[str]:
    """The peers BUM frames currently flood to (all-zero FDB entries)."""
    with IPRoute() as ipr:
        entries = ipr.fdb("dump", ifindex=bridge.vxlan_index)
        return sorted(str(m.get_attr("NDA_DST")) for m in entries
                      if m.get_attr("NDA_LLADDR") == ZERO_MAC and m.get_attr("NDA_DST"))


def bridge_addresses(name: str = BRIDGE) -> list[str]:
    """The bridge's IPv4 addresses as CIDRs (what `expose` assigned)."""
    with IPRoute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return []
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.addr("dump", index=idx, family=2)]


# -- iptables (the iptables binary with argv lists; netfilter has no rtnetlink API) ----------

def iptables(table: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one iptables command in this network namespace."""
    return subprocess.run(["iptables", "-w", "5", "-t", table, *args], capture_output=True,
                          text=True, check=False)


def _must(res: subprocess.CompletedProcess[str], what: str) -> None:
    if res.returncode != 0:
        raise DatapathError(f"iptables {what}: {res.stderr.strip() or res.stdout.strip()}")


def ensure_chain(table: str, chain: str, flush: bool = False) -> None:
    """Create a chain if missing (and flush it when asked)."""
    if iptables(table, "-n", "-L", chain).returncode != 0:
        _must(iptables(table, "-N", chain), f"-t {table} -N {chain}")
    elif flush:
        _must(iptables(table, "-F", chain), f"-t {table} -F {chain}")


def append_unique(table: str, chain: str, *rule: str) -> None:
    """Append a rule unless it is already there."""
    if iptables(table, "-C", chain, *rule).returncode != 0:
        _must(iptables(table, "-A", chain, *rule), f"-t {table} -A {chain} {' '.join(rule)}")


def rules_at_top(table: str, chain: str, rules: list[list[str]]) -> None:
    """Make `rules` the first rules of `chain`, in order (upstream's ensureRulesAtTop)."""
    for rule in reversed(rules):
        while iptables(table, "-D", chain, *rule).returncode == 0:
            pass
        _must(iptables(table, "-I", chain, "1", *rule), f"-t {table} -I {chain} {' '.join(rule)}")


def configure_iptables(bridge: str, http_port: int, npc: bool) -> None:
    """Upstream's ResetIPTables + ConfigureIPTables for a bridge without a Docker bridge."""
    if not npc:
        ensure_chain("filter", "WEAVE-EXPOSE", flush=True)
    ensure_chain("nat", "WEAVE", flush=True)
    append_unique("filter", "INPUT", "-p", "tcp", "--dst", "127.0.0.1", "--dport",
                  str(http_port), "-m", "addrtype", "!", "--src-type", "LOCAL",
                  "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED",
                  "-m", "comment", "--comment", "Block non-local access to Weave Net control port",
                  "-j", "DROP")
    fwd: list[list[str]] = []
    if npc:
        # --expect-npc: traffic to pods goes through weave-npc's chains and is otherwise
        # dropped; without a running weave-npc nothing reaches a pod (why the testbed never
        # passes the flag).
        ensure_chain("filter", "WEAVE-NPC")
        ensure_chain("filter", "WEAVE-NPC-EGRESS")
        append_unique("filter", "INPUT", "-i", bridge, "-j", "WEAVE-NPC-EGRESS")
        fwd += [["-i", bridge, "-m", "comment", "--comment",
                 "NOTE: this must go before '-j KUBE-FORWARD'", "-j", "WEAVE-NPC-EGRESS"],
                ["-o", bridge, "-m", "comment", "--comment",
                 "NOTE: this must go before '-j KUBE-FORWARD'", "-j", "WEAVE-NPC"],
                ["-o", bridge, "-j", "DROP"]]
    else:
        fwd += [["-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                ["-o", bridge, "-j", "WEAVE-EXPOSE"]]
    fwd += [["-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"],
            ["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]]
    rules_at_top("filter", "FORWARD", fwd)
    append_unique("nat", "POSTROUTING", "-j", "WEAVE")


def expose(cidr: str, npc: bool, skip_nat: bool = False, bridge: str = BRIDGE) -> None:
    """Give the bridge an address so the node reaches pods; NAT as upstream's Expose."""
    iface = ipaddress.IPv4Interface(cidr)
    with IPRoute() as ipr:
        idx = _index(ipr, bridge)
        if idx is None:
            raise DatapathError(f"bridge {bridge!r} not present")
        try:
            ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as e:
            if e.code != EEXIST:  # a concurrent expose already set it
                raise DatapathError(f"adding address {cidr} to {bridge!r}: {e}") from e
    net = str(iface.network)
    if not skip_nat:
        append_unique("nat", "WEAVE", "-s", net, "-d", "224.0.0.0/4", "-j", "RETURN")
        append_unique("nat", "WEAVE", "!", "-s", net, "-d", net, "-j", "MASQUERADE")
        append_unique("nat", "WEAVE", "-s", net, "!", "-d", net, "-j", "MASQUERADE")
    if not npc:
        append_unique("filter", "WEAVE-EXPOSE", "-d", net, "-j", "ACCEPT")


def reexpose(npc: bool, log: Log, bridge: str = BRIDGE) -> None:
    """After a restart, put back the NAT rules of addresses the bridge still carries."""
    for cidr in bridge_addresses(bridge):
        log(f"Re-exposing {cidr} on bridge {bridge!r}")
        expose(cidr, npc, bridge=bridge)
