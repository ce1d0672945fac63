"""Just enough rtnetlink, in the standard library, for the calico CNI plugin's veth work.

The plugin is copied alone into a node's /opt/cni/bin and run by the node's python3, so it
cannot count on pyroute2. This speaks NETLINK_ROUTE directly: veth pairs (peer created in
the pod's namespace), link up/delete, addresses, routes, IPv4 per-device sysctls through
IFLA_AF_SPEC and the neighbour table's proxy_delay -- the same kernel requests
vishvananda/netlink makes for upstream's plugin.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_SETNEIGHTBL = 67

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_AF_SPEC = 26
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFLA_INET_CONF = 1
IFF_UP = 0x1

IFA_ADDRESS = 1
IFA_LOCAL = 2

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

NDTA_NAME = 1
NDTA_PARMS = 6
NDTPA_IFINDEX = 1
NDTPA_PROXY_DELAY = 13

# include/uapi/linux/ip.h, enum IPV4_DEVCONF_*
DEVCONF = {"forwarding": 1, "proxy_arp": 3, "rp_filter": 8, "route_localnet": 26}

CLONE_NEWNET = 0x40000000


class NetlinkError(OSError):
    """The kernel refused a request (errno and a description of the request)."""


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _u64(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=Q", value))


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def mac_bytes(mac: str) -> bytes:
    """`ee:ee:ee:ee:ee:ee` -> 6 bytes."""
    return bytes(int(x, 16) for x in mac.split(":"))


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel picks for a new veth)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


class Netlink:
    """One NETLINK_ROUTE socket, bound to the network namespace it was opened in."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, body: bytes, what: str) -> None:
        """Send one request and wait for its ACK; raise NetlinkError on a negative errno."""
        self.seq += 1
        header = struct.pack("=LHHLL", 16 + len(body), msg_type,
                             flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq, _ = struct.unpack_from("=LHHLL", data, offset)
                if kind == NLMSG_ERROR and seq == self.seq:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code:
                        raise NetlinkError(-code, f"{what}: {os.strerror(-code)}")
                    return
                if kind == NLMSG_DONE and seq == self.seq:
                    return
                offset += (length + 3) & ~3
                if length == 0:
                    break

    # -- links ----------------------------------------------------------------------------------
    def add_veth(self, name: str, peer: str, peer_netns_fd: int, *, mtu: int = 0,
                 mac: str = "", peer_mac: str = "") -> None:
        """A veth pair: `name` here, `peer` created directly inside another namespace."""
        peer_attrs = [_str(IFLA_IFNAME, peer), _u32(IFLA_NET_NS_FD, peer_netns_fd)]
        own = [_str(IFLA_IFNAME, name)]
        if mtu:
            peer_attrs.append(_u32(IFLA_MTU, mtu))
            own.append(_u32(IFLA_MTU, mtu))
        if peer_mac:
            peer_attrs.append(_attr(IFLA_ADDRESS, mac_bytes(peer_mac)))
        if mac:
            own.append(_attr(IFLA_ADDRESS, mac_bytes(mac)))
        info = _nested(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth"),
                       _nested(IFLA_INFO_DATA,
                               _nested(VETH_INFO_PEER, _ifinfo() + b"".join(peer_attrs))))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                     _ifinfo() + b"".join(own) + info, f"add veth {name}/{peer}")

    def set_up(self, index: int) -> None:
        """Bring a link up."""
        self.request(RTM_NEWLINK, 0, _ifinfo(index, IFF_UP, IFF_UP), f"set link {index} up")

    def delete_link(self, index: int) -> None:
        """Delete a link (a veth takes its peer with it)."""
        self.request(RTM_DELLINK, 0, _ifinfo(index), f"delete link {index}")

    def set_devconf(self, index: int, values: dict[str, int]) -> None:
        """IPv4 per-device sysctls (net.ipv4.conf.<dev>.*) without writing /proc/sys."""
        conf = b"".join(_u32(DEVCONF[k], v) for k, v in values.items())
        spec = _nested(IFLA_AF_SPEC, _nested(socket.AF_INET, _nested(IFLA_INET_CONF, conf)))
        self.request(RTM_NEWLINK, 0, _ifinfo(index) + spec, f"set ipv4 conf of {index}")

    def set_proxy_delay(self, index: int, msecs: int) -> None:
        """net.ipv4.neigh.<dev>.proxy_delay (in jiffies there; milliseconds here)."""
        parms = _nested(NDTA_PARMS, _u32(NDTPA_IFINDEX, index), _u64(NDTPA_PROXY_DELAY, msecs))
        body = struct.pack("=Bxxx", socket.AF_INET) + _str(NDTA_NAME, "arp_cache") + parms
        self.request(RTM_SETNEIGHTBL, 0, body, f"set proxy_delay of {index}")

    # -- addresses and routes ------------------------------------------------------------------
    def add_address(self, index: int, cidr: str) -> None:
        """An IPv4 address on a link."""
        iface = ipaddress.ip_interface(cidr)
        raw = iface.ip.packed
        body = struct.pack("=BBBBi", socket.AF_INET, iface.network.prefixlen, 0,
                           RT_SCOPE_UNIVERSE, index)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
                     body + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw),
                     f"add address {cidr}")

    def add_route(self, dst: str, index: int, gateway: str = "", *,
                  scope: int = RT_SCOPE_UNIVERSE, replace: bool = False) -> None:
        """A unicast route in the main table (proto boot, as netlink.RouteAdd makes it)."""
        net = ipaddress.ip_network(dst)
        body = struct.pack("=BBBBBBBBI", socket.AF_INET, net.prefixlen, 0, 0, RT_TABLE_MAIN,
                           RTPROT_BOOT, scope, RTN_UNICAST, 0)
        attrs = _u32(RTA_OIF, index)
        if net.prefixlen:
            attrs = _attr(RTA_DST, net.network_address.packed) + attrs
        if gateway:
            attrs += _attr(RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
        flags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self.request(RTM_NEWROUTE, flags, body + attrs, f"add route {dst}")


def link_index(name: str) -> int | None:
    """A link's index in the calling thread's namespace, None when it does not exist."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind fd."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def netns(path: str) -> Iterator[None]:
    """Run the block inside the namespace at path, then come back (single-threaded use)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
CLONE_NEWNS = 0x00020000
_private_proc_sys = False


def private_writable_proc_sys() -> bool:
    """Give this process a private mount namespace whose /proc/sys is writable.

    Container engines mount /proc/sys read-only unless --privileged; a kubelet host has it
    read-write. With CAP_SYS_ADMIN the plugin remounts it read-write in a namespace of its
    own, so the node's mounts stay untouched and the sysctls land in the right netns.
    """
    global _private_proc_sys
    if _private_proc_sys:
        return True
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC
    if (_libc.unshare(CLONE_NEWNS) != 0
            or _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0
            or _libc.mount(None, b"/proc/sys", None, flags, None) != 0):
        return False
    _private_proc_sys = True
    return True


def write_sysctl(path: str, value: str) -> bool:
    """Write a /proc/sys value; False when /proc/sys stays read-only and holds another value."""
    for attempt in range(2):
        try:
            with open(path, "w") as f:
                f.write(value)
            return True
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            if attempt or not private_writable_proc_sys():
                break
    with open(path) as f:
        return f.read().strip() == value
