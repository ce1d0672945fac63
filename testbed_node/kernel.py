"""Kernel feature probe: which link kinds, qdiscs and netfilter parts this kernel really offers.

Run as `python3 -m testbed_node.kernel` inside a node container (or one with the node's
capabilities). Each feature is probed by doing it: a link of each kind is created in a fresh
network namespace (or, failing that, in the container's own one), a qdisc of each kind is
attached to a veth, iptables/ipset/conntrack are exercised through their tools, and
everything created is deleted again. Prints one JSON object:

    {"probe": "netlink"|"degraded", "netns": "fresh"|"own"|null, "kernel": "6.1.0-...",
     "features": {"vxlan": {"present": true, "detail": "..."}, ...}}

`present` is null when the probe could not tell (e.g. pyroute2 is missing, so nothing could
be created); the caller then falls back to `read_only()`, which looks at /sys/module,
/proc and /lib/modules without changing anything and can also run on a host.

Stdlib and pyroute2 only; it imports no other testbed module.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testbed_node.kmodules import EVIDENCE, FEATURES, Result, read_only, result

__all__ = ["FEATURES", "link", "probe", "read_only"]

PREFIX = "tbp"  # names of everything the probe creates start with this
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
TC_H_ROOT = 0xFFFFFFFF
CMD_TIMEOUT = 15


def _errtext(e: BaseException) -> str:
    code = getattr(e, "code", None)
    if isinstance(code, int) and code > 0:
        name = errno.errorcode.get(code, str(code))
        return f"{name}: {os.strerror(code)}"
    return f"{e.__class__.__name__}: {e}"


# --- link kinds -------------------------------------------------------------------------------

LINKS: dict[str, dict[str, Any]] = {
    "veth": {"kind": "veth", "peer": f"{PREFIX}-veth1"},
    "bridge": {"kind": "bridge"},
    "vxlan": {"kind": "vxlan", "vxlan_id": 4242, "vxlan_port": 48790},
    "ipip": {"kind": "ipip", "ipip_remote": "192.0.2.1", "ipip_local": "192.0.2.2"},
    "gre": {"kind": "gre", "gre_remote": "192.0.2.1", "gre_local": "192.0.2.2"},
    "dummy": {"kind": "dummy"},
    "wireguard": {"kind": "wireguard"},
}


def _probe_link(ipr: Any, feature: str) -> Result:
    spec = dict(LINKS[feature])
    name = f"{PREFIX}-{feature[:10]}"
    if feature == "veth":
        name = f"{PREFIX}-veth0"
    try:
        ipr.link("add", ifname=name, **spec)
    except Exception as e:
        if getattr(e, "code", None) == errno.EOPNOTSUPP:
            return result(False, f"the kernel has no such link type: {_errtext(e)}")
        return result(None, f"could not create one: {_errtext(e)}")
    try:
        if not ipr.link_lookup(ifname=name):
            return result(False, f"the kernel accepted a {spec['kind']} link but it is missing")
    finally:
        with contextlib.suppress(Exception):
            ipr.link("del", ifname=name)
    return result(True, f"created and deleted a {spec['kind']} link")


# --- qdiscs -----------------------------------------------------------------------------------

QDISCS: dict[str, dict[str, Any]] = {
    "netem": {"delay": 1000, "loss": 0},
    "tbf": {"rate": "10mbit", "burst": 16384, "latency": "50ms"},
    "htb": {"default": 0x10},
}


def _probe_qdiscs(ipr: Any) -> dict[str, Result]:
    dev, peer = f"{PREFIX}-q0", f"{PREFIX}-q1"
    try:
        ipr.link("add", ifname=dev, kind="veth", peer=peer)
        (index,) = ipr.link_lookup(ifname=dev)[:1]
    except Exception as e:
        why = f"no veth to attach a qdisc to ({_errtext(e)})"
        return {q: result(None, why) for q in QDISCS}
    out: dict[str, Result] = {}
    try:
        for kind, params in QDISCS.items():
            try:
                ipr.tc("add", kind, index, 0x10000, **params)
            except Exception as e:
                if getattr(e, "code", None) == errno.ENOENT:
                    out[kind] = result(False, f"the kernel has no such qdisc: {_errtext(e)}")
                else:
                    out[kind] = result(None, f"could not attach one: {_errtext(e)}")
                continue
            with contextlib.suppress(Exception):
                ipr.tc("del", index=index, handle=0x10000, parent=TC_H_ROOT)
            out[kind] = result(True, f"attached and removed a {kind} qdisc on a veth")
    finally:
        with contextlib.suppress(Exception):
            ipr.link("del", ifname=dev)
    return out


# --- generic netlink families -----------------------------------------------------------------

def _genl_family(name: str) -> Result | None:
    """Whether a generic netlink family is registered; None when pyroute2 cannot ask."""
    try:
        from pyroute2.netlink import genlmsg
        from pyroute2.netlink.generic import GenericNetlinkSocket
    except ImportError:
        return None
    sock = GenericNetlinkSocket()
    try:
        sock.bind(name, genlmsg)
    except Exception as e:
        if getattr(e, "code", None) == errno.ENOENT:
            return result(False, f"no generic netlink family {name}")
        return result(None, f"cannot query generic netlink family {name}: {_errtext(e)}")
    finally:
        with contextlib.suppress(Exception):
            sock.close()
    return result(True, f"generic netlink family {name} is registered")


def _probe_openvswitch() -> Result:
    found = _genl_family("ovs_datapath")
    if found is not None and found["present"] is not None:
        return found
    if Path("/sys/module/openvswitch").exists():
        return result(True, "/sys/module/openvswitch exists")
    return found or result(None, "pyroute2 is missing: cannot query ovs_datapath")


def _probe_ipvs() -> Result:
    if Path("/proc/net/ip_vs").exists():
        return result(True, "/proc/net/ip_vs exists")
    found = _genl_family("IPVS")
    if found is not None:
        return found
    return result(None, "no /proc/net/ip_vs and pyroute2 is missing: cannot query IPVS")


# --- devices, sysctls, tools ------------------------------------------------------------------

def _probe_tun() -> Result:
    dev = Path("/dev/net/tun")
    if dev.exists():
        try:
            fd = os.open(dev, os.O_RDWR)
        except OSError as e:
            return result(None, f"cannot open /dev/net/tun: {_errtext(e)}")
        try:
            ifr = struct.pack("16sH22x", f"{PREFIX}-tap{os.getpid() % 10000}".encode(),
                              IFF_TAP | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            return result(False, f"TUNSETIFF on /dev/net/tun failed: {_errtext(e)}")
        finally:
            os.close(fd)  # the tap is not persistent: closing removes it
        return result(True, "created a tap device through /dev/net/tun (TUNSETIFF)")
    if Path("/sys/class/misc/tun").exists():
        return result(True, "tun driver registered (/sys/class/misc/tun); /dev/net/tun is "
                             "not in this container")
    if Path("/sys/module/tun").exists():
        return result(True, "/sys/module/tun exists")
    return result(False, "no /dev/net/tun, /sys/class/misc/tun or /sys/module/tun")


def _probe_br_netfilter() -> Result:
    path = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if path.exists():
        try:
            value = path.read_text().strip()
        except OSError:
            value = "?"
        return result(True, f"net.bridge.bridge-nf-call-iptables = {value}")
    if Path("/sys/module/br_netfilter").exists():
        return result(True, "/sys/module/br_netfilter exists")
    return result(False, "no /proc/sys/net/bridge/bridge-nf-call-iptables")


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, _errtext(e)
    text = (proc.stderr or proc.stdout).strip().splitlines()
    return proc.returncode, text[-1] if text else ""


def _probe_tool(feature: str, argv: list[str]) -> Result:
    if shutil.which(argv[0]) is None:
        return result(None, f"{argv[0]} is not installed here")
    code, text = _run(argv)
    if code == 0:
        return result(True, f"`{' '.join(argv)}` works")
    return result(False, f"`{' '.join(argv)}` exited {code}: {text}")


def _probe_ipset() -> Result:
    name = f"{PREFIX}-probe-{os.getpid()}"
    if shutil.which("ipset") is None:
        return result(None, "ipset is not installed here")
    code, text = _run(["ipset", "create", name, "hash:ip"])
    if code != 0:
        return result(False, f"`ipset create` exited {code}: {text}")
    code, text = _run(["ipset", "destroy", name])
    if code != 0:
        return result(True, f"created a hash:ip set but could not destroy it: {text}")
    return result(True, "created and destroyed a hash:ip set")


def _probe_conntrack() -> Result:
    for path in EVIDENCE["conntrack"]:
        if Path(path).exists():
            return result(True, f"{path} exists")
    if shutil.which("conntrack"):
        code, text = _run(["conntrack", "-L"])
        if code == 0:
            return result(True, "`conntrack -L` works")
        return result(False, f"`conntrack -L` exited {code}: {text}")
    return result(False, "no /proc/net/nf_conntrack or nf_conntrack sysctls")


# --- namespaces -------------------------------------------------------------------------------

@contextlib.contextmanager
def _ipr() -> Iterator[tuple[Any, str]]:
    """An IPRoute in a fresh named netns (removed afterwards), else in our own netns."""
    from pyroute2 import IPRoute, netns

    name = f"{PREFIX}-probe-{os.getpid()}"
    try:
        netns.create(name)
    except Exception:
        with IPRoute() as ipr:
            yield ipr, "own"
        return
    try:
        with IPRoute(netns=name) as ipr:
            yield ipr, "fresh"
    finally:
        with contextlib.suppress(Exception):
            netns.remove(name)


def probe() -> Result:
    """Probe every feature by using it; deletes everything it created."""
    logging.getLogger("pyroute2").setLevel(logging.CRITICAL)
    features: dict[str, Result] = {}
    mode, where = "netlink", None
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        mode = "degraded"
    if mode == "netlink":
        try:
            with _ipr() as (ipr, where):
                for feature in LINKS:
                    features[feature] = _probe_link(ipr, feature)
                features.update(_probe_qdiscs(ipr))
        except Exception as e:
            why = f"netlink probe failed: {_errtext(e)}"
            for feature in (*LINKS, *QDISCS):
                features.setdefault(feature, result(None, why))
    else:
        for feature in (*LINKS, *QDISCS):
            features[feature] = result(None, "pyroute2 is missing: no link or qdisc created")
    checks: dict[str, Callable[[], Result]] = {
        "tun": _probe_tun,
        "openvswitch": _probe_openvswitch,
        "ipvs": _probe_ipvs,
        "br_netfilter": _probe_br_netfilter,
        "iptables_legacy": lambda: _probe_tool("iptables_legacy",
                                               ["iptables-legacy", "-w", "-L", "-n"]),
        "iptables_nft": lambda: _probe_tool("iptables_nft", ["iptables-nft", "-L", "-n"]),
        "ipset": _probe_ipset,
        "conntrack": _probe_conntrack,
    }
    for feature, check in checks.items():
        try:
            features[feature] = check()
        except Exception as e:
            features[feature] = result(None, f"probe error: {_errtext(e)}")
    # Whatever could not be told by doing it, /sys/module and /lib/modules may still tell.
    fallback = read_only()["features"]
    for feature, got in features.items():
        if got["present"] is None and fallback[feature]["present"] is not None:
            features[feature] = result(fallback[feature]["present"],
                                        f"{fallback[feature]['detail']} (read-only check; "
                                        f"{got['detail']})")
    return {"probe": mode, "netns": where, "kernel": os.uname().release,
            "features": {f: features[f] for f in FEATURES}}


def link(feature: str) -> Result:
    """Create and delete one link kind (a CNI's preflight), in a fresh netns when possible."""
    if feature not in LINKS:
        return result(None, f"unknown link kind {feature!r}; known: {', '.join(LINKS)}")
    logging.getLogger("pyroute2").setLevel(logging.CRITICAL)
    try:
        with _ipr() as (ipr, _):
            return _probe_link(ipr, feature)
    except Exception as e:
        return result(None, f"netlink probe failed: {_errtext(e)}")


def main(argv: list[str] | None = None) -> int:
    """Print one JSON object: `probe()` by default, `read_only()` with --read-only, one link
    kind with `--link KIND` (exit 1 unless the kernel has it)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--link"] and len(args) == 2:
        got = link(args[1])
        print(json.dumps(got))
        return 0 if got["present"] else 1
    doc = read_only() if "--read-only" in args else probe()
    print(json.dumps(doc, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
