#!/usr/bin/python3
"""weaveutil of the reference build: the weave-net CNI plugin and weave-ipam, by argv[0].

`weave --local setup-cni` copies this one file to /opt/cni/bin/weave-plugin-<version> and links
weave-net and weave-ipam to it, so it runs on the node's own python3 with nothing but the
standard library: netlink is spoken directly (rtnetlink over an AF_NETLINK socket, setns(2)
through libc), never through `ip` command strings.

weave-net ADD (plugin/net/cni.go): allocate the pod's address from weaver (POST /ip/<id>, or
the IPAM plugin named in the config), make sure bridge `weave` has an address (POST
/ip/weave:expose then POST /expose/<cidr> when it has none), create veth vethwepl<id[:7]> on the
bridge (hairpin per `hairpinMode`, default true) with its peer as CNI_IFNAME in the pod netns,
add the address, a /32 route to the gateway when it lies outside the pod's subnet, and the
default route via the bridge address; print the result. DEL removes CNI_IFNAME and releases
the addresses (DELETE /ip/<id>), tolerating what is already gone. CHECK is not implemented,
as upstream (the conflist sets disableCheck).

One deviation: when weaver does not answer yet (connection refused), the plugin retries for up
to WEAVE_WAIT_S seconds (default 30) instead of failing at once; a kubelet would retry the
sandbox, the testbed agent does not.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

VERSION = "2.8.1-reference"
SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
BRIDGE = "weave"
EXPOSE_ID = "weave:expose"
VETH_PREFIX = "vethwepl"
IFNAMSIZ = 16

# rtnetlink constants (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h)
NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE = 20, 22, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_PROTINFO, IFLA_LINKINFO, IFLA_NET_NS_FD = 12, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BRPORT_MODE = 4  # hairpin
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
NLA_F_NESTED = 0x8000
IFF_UP = 0x1
AF_BRIDGE = 7
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
CLONE_NEWNET = 0x40000000
EEXIST, ENODEV, ENOENT = 17, 19, 2


class PluginError(Exception):
    """A failure reported to the runtime as CNI error JSON."""

    def __init__(self, msg: str, code: int = 999) -> None:
        super().__init__(msg)
        self.code = code


# -- a minimal rtnetlink client ---------------------------------------------------------------

def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * ((4 - length % 4) % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = 0) -> bytes:
    return struct.pack("=BxHiII", family, 0, index, flags, change)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Top-level attributes of a netlink payload (the first occurrence of each type)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        out.setdefault(kind & ~NLA_F_NESTED, data[pos + 4:pos + length])
        pos += (length + 3) & ~3
    return out


class Netlink:
    """One NETLINK_ROUTE socket, in the network namespace it was created in."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = int(time.time()) & 0xFFFF

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def request(self, kind: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return the answer's messages, or raise OSError(errno)."""
        self.seq += 1
        msg = struct.pack("=IHHII", 16 + len(payload), kind, flags | NLM_F_REQUEST, self.seq,
                          0) + payload
        self.sock.send(msg)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, pos)
                body = data[pos + 16:pos + length]
                pos += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, body))
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return out

    def link(self, name: str) -> dict[str, Any] | None:
        """Index, MTU, MAC and master of a link by name, or None."""
        try:
            msgs = self.request(RTM_GETLINK, 0, _ifinfo() + _str(IFLA_IFNAME, name))
        except OSError as e:
            if e.errno in (ENODEV, ENOENT):
                return None
            raise
        if not msgs:
            return None
        body = msgs[0][1]
        index = struct.unpack_from("=BxHiII", body)[2]
        attrs = parse_attrs(body[16:])
        mac = attrs.get(IFLA_ADDRESS, b"")
        return {"index": index, "name": name,
                "mtu": struct.unpack("=I", attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0,
                "mac": ":".join(f"{b:02x}" for b in mac),
                "master": struct.unpack("=I", attrs[IFLA_MASTER])[0]
                if IFLA_MASTER in attrs else 0}

    def addresses(self, index: int) -> list[ipaddress.IPv4Interface]:
        """IPv4 addresses of a link."""
        msgs = self.request(RTM_GETADDR, NLM_F_DUMP,
                            struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0))
        out = []
        for _kind, body in msgs:
            _family, prefix, _flags, _scope, idx = struct.unpack_from("=BBBBI", body)
            if idx != index:
                continue
            attrs = parse_attrs(body[8:])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                out.append(ipaddress.IPv4Interface((socket.inet_ntoa(raw), prefix)))
        return out

    def add_veth(self, name: str, peer: str, mtu: int, peer_netns_fd: int) -> None:
        """A veth pair whose peer is created directly in another network namespace."""
        peer_info = (_ifinfo() + _str(IFLA_IFNAME, peer) + _u32(IFLA_MTU, mtu)
                     + _u32(IFLA_NET_NS_FD, peer_netns_fd))
        info = _nested(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth"),
                       _nested(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info)))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
                     _ifinfo() + _str(IFLA_IFNAME, name) + _u32(IFLA_MTU, mtu) + info)

    def set_master(self, index: int, master: int) -> None:
        """Enslave a link to a bridge."""
        self.request(RTM_NEWLINK, NLM_F_ACK, _ifinfo(index) + _u32(IFLA_MASTER, master))

    def set_hairpin(self, index: int, on: bool) -> None:
        """Bridge port hairpin mode (what `bridge link set dev X hairpin on` sends)."""
        self.request(RTM_SETLINK, NLM_F_ACK, _ifinfo(index, family=AF_BRIDGE)
                     + _nested(IFLA_PROTINFO, _attr(IFLA_BRPORT_MODE, bytes([int(on)]))))

    def set_up(self, index: int) -> None:
        """Administratively up."""
        self.request(RTM_NEWLINK, NLM_F_ACK, _ifinfo(index, IFF_UP, IFF_UP))

    def delete(self, index: int) -> None:
        """Delete a link (a veth takes its peer with it)."""
        self.request(RTM_DELLINK, NLM_F_ACK, _ifinfo(index))

    def add_address(self, index: int, iface: ipaddress.IPv4Interface) -> None:
        """Add an IPv4 address (with its broadcast, as `ip addr add ... brd +`)."""
        ip = socket.inet_aton(str(iface.ip))
        brd = socket.inet_aton(str(iface.network.broadcast_address))
        payload = (struct.pack("=BBBBI", socket.AF_INET, iface.network.prefixlen, 0, 0, index)
                   + _attr(IFA_LOCAL, ip) + _attr(IFA_ADDRESS, ip) + _attr(IFA_BROADCAST, brd))
        try:
            self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, payload)
        except OSError as e:
            if e.errno != EEXIST:
                raise

    def add_route(self, dst: ipaddress.IPv4Network, gateway: str | None, oif: int,
                  scope: int) -> None:
        """A main-table IPv4 route; an existing identical route is fine."""
        payload = struct.pack("=BBBBBBBBI", socket.AF_INET, dst.prefixlen, 0, 0, RT_TABLE_MAIN,
                              RTPROT_BOOT, scope, RTN_UNICAST, 0)
        if dst.prefixlen:
            payload += _attr(RTA_DST, socket.inet_aton(str(dst.network_address)))
        if gateway:
            payload += _attr(RTA_GATEWAY, socket.inet_aton(gateway))
        payload += _u32(RTA_OIF, oif)
        try:
            self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, payload)
        except OSError as e:
            if e.errno != EEXIST:
                raise


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def netns(path: str) -> Iterator[Netlink]:
    """A netlink socket inside the namespace at `path` (this thread returns home after)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            nl = Netlink()
        finally:
            _setns(home)
        try:
            yield nl
        finally:
            nl.close()
    finally:
        os.close(target)
        os.close(home)


# -- the weaver HTTP client -----------------------------------------------------------------

def weave_call(method: str, path: str) -> str:
    """Call weaver's API (WEAVE_HTTP_ADDR, default 127.0.0.1:6784); retry while refused."""
    addr = os.environ.get("WEAVE_HTTP_ADDR") or "127.0.0.1:6784"
    if addr.startswith("/"):
        raise PluginError(f"WEAVE_HTTP_ADDR {addr}: unix sockets are not supported by the "
                          "reference build")
    deadline = time.monotonic() + float(os.environ.get("WEAVE_WAIT_S", "30"))
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    while True:
        try:
            with urllib.request.urlopen(req, timeout=100) as resp:
                return str(resp.read().decode())
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace").strip()
            raise PluginError(f"{method} {path}: {e.code} {body}") from e
        except urllib.error.URLError as e:
            refused = isinstance(e.reason, ConnectionRefusedError)
            if not refused or time.monotonic() > deadline:
                raise PluginError(f"{method} http://{addr}{path}: {e.reason} (is weave "
                                  "running?)") from e
            time.sleep(0.5)


# -- the CNI plugins --------------------------------------------------------------------------

def _result(version: str, cidr: str, gateway: str | None,
            routes: list[dict[str, Any]] | None, dns: dict[str, Any] | None) -> dict[str, Any]:
    """A result in the format of the requested spec version (types.PrintResult)."""
    if version in ("0.1.0", "0.2.0"):
        ip4: dict[str, Any] = {"ip": cidr}
        if gateway:
            ip4["gateway"] = gateway
        if routes:
            ip4["routes"] = routes
        return {"cniVersion": version, "ip4": ip4, "dns": dns or {}}
    ip: dict[str, Any] = {"address": cidr}
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        ip["version"] = "4"
    if gateway:
        ip["gateway"] = gateway
    out: dict[str, Any] = {"cniVersion": version, "ips": [ip]}
    if routes:
        out["routes"] = routes
    out["dns"] = dns or {}
    return out


def _delegate(ptype: str, command: str, stdin: bytes) -> dict[str, Any]:
    """Run another IPAM plugin from CNI_PATH (ipam.ExecAdd / ExecDel)."""
    import subprocess
    for d in (os.environ.get("CNI_PATH") or "").split(os.pathsep):
        path = os.path.join(d, ptype)
        if d and os.access(path, os.X_OK):
            proc = subprocess.run([path], input=stdin, capture_output=True, check=False,
                                  env={**os.environ, "CNI_COMMAND": command})
            if proc.returncode != 0:
                try:
                    msg = json.loads(proc.stdout).get("msg", "")
                except ValueError:
                    msg = proc.stderr.decode(errors="replace").strip()
                raise PluginError(f"{ptype} {command}: {msg}")
            return json.loads(proc.stdout) if proc.stdout.strip() else {}
    raise PluginError(f"failed to find plugin {ptype!r} in path {os.environ.get('CNI_PATH')}")


def ipam_allocate(conf: dict[str, Any], container_id: str) -> tuple[str, str | None, Any]:
    """weave-ipam's Allocate: (cidr, gateway, routes) from weaver."""
    if not container_id:
        raise PluginError("Weave CNI Allocate: blank container name")
    ipam = conf.get("ipam") or {}
    subnet = ipam.get("subnet")
    if subnet:
        try:
            net = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError as e:
            raise PluginError(f"subnet given in config, but not parseable: {e}") from e
        cidr = weave_call("POST", f"/ip/{container_id}/{net}")
    else:
        cidr = weave_call("POST", f"/ip/{container_id}")
    try:
        ipaddress.IPv4Interface(cidr.strip())
    except ValueError as e:
        raise PluginError(f"weave answered {cidr!r} instead of an address") from e
    return cidr.strip(), ipam.get("gateway"), ipam.get("routes")


def ipam_release(container_id: str) -> None:
    """weave-ipam's Release: DELETE /ip/<id>; no addresses is not an error."""
    try:
        weave_call("DELETE", f"/ip/{container_id}")
    except PluginError as e:
        if f"Delete: no addresses for {container_id}" in str(e):
            print(f"weave-cni: Delete: no addresses for {container_id}", file=sys.stderr)
            return
        raise


def _bridge_ip(nl: Netlink, bridge: dict[str, Any],
               pod: ipaddress.IPv4Interface) -> ipaddress.IPv4Address | None:
    addrs = nl.addresses(bridge["index"])
    for a in addrs:
        if a.ip in pod.network:
            return a.ip
    return addrs[0].ip if addrs else None


def net_add(conf: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """weave-net ADD."""
    if conf.get("isGateway"):
        raise PluginError("Gateway functionality not supported")
    if conf.get("ipMasq"):
        raise PluginError("IP Masquerading functionality not supported")
    bridge_name = conf.get("bridge") or BRIDGE
    hairpin = bool(conf.get("hairpinMode", True))
    container_id, ifname, ns_path = env["CNI_CONTAINERID"], env["CNI_IFNAME"], env["CNI_NETNS"]
    ipam_type = (conf.get("ipam") or {}).get("type", "")
    if ipam_type:
        res = _delegate(ipam_type, "ADD", json.dumps(conf).encode())
        ips = res.get("ips") or ([{"address": res["ip4"]["ip"],
                                   "gateway": res["ip4"].get("gateway")}] if res.get("ip4")
                                 else [])
        if not ips:
            raise PluginError("IPAM plugin failed to allocate IP address")
        cidr, gateway, routes = ips[0]["address"], ips[0].get("gateway"), res.get("routes")
    else:
        try:
            cidr, gateway, routes = ipam_allocate(conf, container_id)
        except PluginError as e:
            raise PluginError(f"unable to allocate IP address: {e}") from e
    pod = ipaddress.IPv4Interface(cidr)

    host = Netlink()
    try:
        bridge = host.link(bridge_name)
        if bridge is None:
            raise PluginError(f'bridge "{bridge_name}" not present; did you launch weave?')
        if not routes and not gateway:
            gw = _bridge_ip(host, bridge, pod)
            if gw is None:  # first pod on this node: expose the bridge (as upstream)
                bridge_cidr = weave_call("POST", f"/ip/{EXPOSE_ID}").strip()
                weave_call("POST", f"/expose/{bridge_cidr}")
                gw = ipaddress.IPv4Interface(bridge_cidr).ip
            gateway = str(gw)
        if os.stat(ns_path).st_ino == os.stat("/proc/self/ns/net").st_ino:
            raise PluginError("can not specify host network namespace as network namespace to "
                              "which container should be added")
        mtu = int(conf.get("mtu") or bridge["mtu"])
        with netns(ns_path) as pod_nl:
            exists = pod_nl.link(ifname) is not None
        if not exists:
            ident = container_id if len(container_id) >= 5 else os.urandom(5).hex()
            name = VETH_PREFIX + ident[:IFNAMSIZ - 1 - len(VETH_PREFIX)]
            fd = os.open(ns_path, os.O_RDONLY)
            try:
                host.add_veth(name, ifname, mtu, fd)
            finally:
                os.close(fd)
            veth = host.link(name)
            assert veth is not None
            try:
                host.set_master(veth["index"], bridge["index"])
                if hairpin:
                    host.set_hairpin(veth["index"], True)
                host.set_up(veth["index"])
            except OSError:
                host.delete(veth["index"])
                raise
        with netns(ns_path) as pod_nl:
            link = pod_nl.link(ifname)
            if link is None:
                raise PluginError(f"interface {ifname} vanished from {ns_path}")
            pod_nl.add_address(link["index"], pod)
            pod_nl.set_up(link["index"])
            if not routes:
                assert gateway is not None
                gw_ip = ipaddress.IPv4Address(gateway)
                if gw_ip not in pod.network:
                    pod_nl.add_route(ipaddress.IPv4Network(f"{gw_ip}/32"), None, link["index"],
                                     RT_SCOPE_LINK)
                pod_nl.add_route(ipaddress.IPv4Network("0.0.0.0/0"), gateway, link["index"],
                                 RT_SCOPE_UNIVERSE)
            else:
                for r in routes:
                    pod_nl.add_route(ipaddress.IPv4Network(r["dst"]), r.get("gw") or gateway,
                                     link["index"], RT_SCOPE_UNIVERSE)
    except OSError as e:
        raise PluginError(f"error setting up interface {ifname}: {e.strerror or e}") from e
    finally:
        host.close()
    return _result(conf.get("cniVersion", "0.3.0"), str(pod), gateway, routes, conf.get("dns"))


def net_del(conf: dict[str, Any], env: dict[str, str]) -> None:
    """weave-net DEL: remove the interface, release the addresses; missing things are fine."""
    ns_path, ifname = env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", "eth0")
    if ns_path and os.path.exists(ns_path):
        try:
            with netns(ns_path) as nl:
                link = nl.link(ifname)
                if link is not None:
                    nl.delete(link["index"])
        except OSError as e:
            print(f"weave-cni: error removing interface {ifname!r}: {e}", file=sys.stderr)
    ipam_type = (conf.get("ipam") or {}).get("type", "")
    try:
        if ipam_type:
            _delegate(ipam_type, "DEL", json.dumps(conf).encode())
        else:
            ipam_release(env.get("CNI_CONTAINERID", ""))
    except PluginError as e:
        print(f"weave-cni: unable to release IP address: {e}", file=sys.stderr)
        raise


def plugin_main(kind: str, stdin: bytes, env: dict[str, str]) -> dict[str, Any] | None:
    """One CNI invocation of weave-net or weave-ipam; the result to print, if any."""
    command = env.get("CNI_COMMAND", "")
    try:
        conf = json.loads(stdin or b"{}")
    except ValueError as e:
        raise PluginError(f"failed to load netconf: {e}", code=6) from e
    version = str(conf.get("cniVersion") or "0.1.0")
    if command == "VERSION":
        return {"cniVersion": version if version in SUPPORTED else SUPPORTED[-1],
                "supportedVersions": SUPPORTED}
    if version not in SUPPORTED:
        raise PluginError(f"incompatible CNI versions; config is {version!r}, plugin "
                          f"supports {SUPPORTED}", code=1)
    for var in ("CNI_CONTAINERID", "CNI_IFNAME") + (("CNI_NETNS",) if command == "ADD" else ()):
        if command in ("ADD", "DEL") and not env.get(var):
            raise PluginError(f"required env variables [{var}] missing", code=4)
    if command == "CHECK":
        raise PluginError("CNI plugin check not implemented")
    if kind == "weave-ipam":
        if command == "ADD":
            cidr, gateway, routes = ipam_allocate(conf, env["CNI_CONTAINERID"])
            return _result(version, cidr, gateway, routes, None)
        if command == "DEL":
            ipam_release(env["CNI_CONTAINERID"])
            return None
    else:
        if command == "ADD":
            return net_add(conf, env)
        if command == "DEL":
            net_del(conf, env)
            return None
    raise PluginError(f"unknown CNI_COMMAND {command!r}", code=4)


def main() -> int:
    """Dispatch on the name this file was run by."""
    kind = os.path.basename(sys.argv[0])
    if kind not in ("weave-net", "weave-ipam"):
        args = sys.argv[1:]
        if args[:1] in (["version"], ["--version"]):
            print(f"weaveutil {VERSION}")
            return 0
        print("weaveutil (testbed reference build): run as weave-net or weave-ipam (CNI "
              "plugins); `weaveutil version`", file=sys.stderr)
        return 1
    version = "0.1.0"
    try:
        stdin = sys.stdin.buffer.read()
        with suppress(ValueError, AttributeError):
            version = str(json.loads(stdin or b"{}").get("cniVersion") or version)
        result = plugin_main(kind, stdin, dict(os.environ))
    except PluginError as e:
        print(json.dumps({"cniVersion": version, "code": e.code, "msg": str(e)}))
        return 1
    if result is not None:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
