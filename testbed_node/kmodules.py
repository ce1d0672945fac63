"""The read-only kernel check: what /sys/module, /proc and /lib/modules say, changing nothing.

It runs inside a node container or on a host; `testbed_node.kernel` falls back to it for what
its netlink probe could not tell. Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

Result = dict[str, Any]

# Every probed feature, in report order.
FEATURES = ("veth", "bridge", "vxlan", "ipip", "gre", "dummy", "wireguard", "tun", "openvswitch",
            "ipvs", "netem", "tbf", "htb", "br_netfilter", "iptables_legacy", "iptables_nft",
            "ipset", "conntrack")


def result(present: bool | None, detail: str) -> Result:
    return {"present": present, "detail": detail}


# The kernel modules that provide each feature (for the read-only check).
MODULES: dict[str, tuple[str, ...]] = {
    "veth": ("veth",),
    "bridge": ("bridge",),
    "vxlan": ("vxlan",),
    "ipip": ("ipip",),
    "gre": ("ip_gre",),
    "dummy": ("dummy",),
    "wireguard": ("wireguard",),
    "tun": ("tun",),
    "openvswitch": ("openvswitch",),
    "ipvs": ("ip_vs",),
    "netem": ("sch_netem",),
    "tbf": ("sch_tbf",),
    "htb": ("sch_htb",),
    "br_netfilter": ("br_netfilter",),
    "iptables_legacy": ("ip_tables", "iptable_filter"),
    "iptables_nft": ("nf_tables",),
    "ipset": ("ip_set",),
    "conntrack": ("nf_conntrack",),
}

# Files whose existence shows a feature is there (module loaded or built in).
EVIDENCE: dict[str, tuple[str, ...]] = {
    "veth": ("/sys/class/net/veth*",),  # Docker's own container links, when any exist
    "bridge": ("/sys/class/net/*/bridge",),
    "ipip": ("/sys/class/net/tunl0",),  # the fallback device every netns gets with ipip
    "gre": ("/sys/class/net/gre0",),
    "tun": ("/sys/class/misc/tun", "/dev/net/tun"),
    "ipvs": ("/proc/net/ip_vs",),
    "br_netfilter": ("/proc/sys/net/bridge/bridge-nf-call-iptables",),
    "iptables_legacy": ("/proc/net/ip_tables_names",),
    "conntrack": ("/proc/net/nf_conntrack", "/proc/sys/net/netfilter/nf_conntrack_max"),
}


def _module_index(root: str) -> tuple[set[str], set[str], bool]:
    """Built-in and loadable module names from /lib/modules/<release>; and if it was readable."""
    base = Path(root) / "lib" / "modules" / os.uname().release
    builtin: set[str] = set()
    loadable: set[str] = set()
    readable = False
    for fname, into in (("modules.builtin", builtin), ("modules.dep", loadable)):
        try:
            lines = (base / fname).read_text().splitlines()
        except OSError:
            continue
        readable = True
        for line in lines:
            path = line.split(":", 1)[0].strip()
            if path:
                mod = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
                into.add(mod.replace("-", "_"))
    return builtin, loadable, readable


def read_only(root: str = "/") -> Result:
    """What /sys/module, /proc/modules and /lib/modules say, changing nothing.

    A module that is loaded, built in or loadable counts as present. Absence is only
    stated when /lib/modules/<release> could be read; otherwise `present` is null
    (built-in modules without parameters do not show in /sys/module).
    """
    sysmod = Path(root) / "sys" / "module"
    loaded: set[str] = set()
    with contextlib.suppress(OSError):
        loaded = {p.name for p in sysmod.iterdir()}
    with contextlib.suppress(OSError):
        text = (Path(root) / "proc" / "modules").read_text()
        loaded |= {ln.split()[0] for ln in text.splitlines() if ln.strip()}
    builtin, loadable, readable = _module_index(root)
    features: dict[str, Result] = {}
    for feature in FEATURES:
        mods = MODULES[feature]
        evidence = [hit for p in EVIDENCE.get(feature, ())
                    for hit in sorted(Path(root).glob(p.lstrip("/")))[:1]]
        hit = next((m for m in mods if m in loaded), None)
        if hit:
            features[feature] = result(True, f"module {hit} is loaded")
        elif evidence:
            found = "/" + str(evidence[0].relative_to(root)).lstrip("/")
            features[feature] = result(True, f"{found} exists")
        elif (hit := next((m for m in mods if m in builtin), None)):
            features[feature] = result(True, f"module {hit} is built in")
        elif (hit := next((m for m in mods if m in loadable), None)):
            features[feature] = result(True, f"module {hit} is loadable")
        elif readable:
            features[feature] = result(False, f"no {'/'.join(mods)} module loaded, built in "
                                               "or loadable")
        else:
            features[feature] = result(None, f"{'/'.join(mods)} not loaded; no "
                                              f"/lib/modules/{os.uname().release} to tell more")
    return {"probe": "read-only", "netns": None, "kernel": os.uname().release,
            "features": features}


