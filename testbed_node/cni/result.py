"""Checking a plugin's result per the spec, parsing its errors, and a result's summary."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from testbed_node.cni.config import version_ge
from testbed_node.cni.errors import VERSION_RE, CniError


def _valid_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return False
    return True


def _valid_cidr(value: Any) -> bool:
    if not isinstance(value, str) or "/" not in value:
        return False
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return False
    return True


def validate_result(result: Any, context: str = "result") -> dict[str, Any]:
    """Check a plugin result against the spec's result format; return it unchanged."""
    def bad(msg: str) -> CniError:
        return CniError(f"invalid {context}: {msg}")

    if not isinstance(result, dict):
        raise bad("not a JSON object")
    version = result.get("cniVersion")
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise bad(f"missing or invalid cniVersion {version!r}")
    if not version_ge(version, "0.3.0"):
        for key in ("ip4", "ip6"):
            block = result.get(key)
            if block is not None and not (isinstance(block, dict) and _valid_cidr(block.get("ip"))):
                raise bad(f"{key}.ip must be an address in CIDR form")
        return result
    interfaces = result.get("interfaces", [])
    if not isinstance(interfaces, list):
        raise bad("interfaces must be a list")
    for i, iface in enumerate(interfaces):
        if not isinstance(iface, dict) or not isinstance(iface.get("name"), str) \
                or not iface["name"]:
            raise bad(f"interfaces[{i}] needs a name")
        for key in ("mac", "sandbox"):
            if key in iface and not isinstance(iface[key], str):
                raise bad(f"interfaces[{i}].{key} must be a string")
    ips = result.get("ips", [])
    if not isinstance(ips, list):
        raise bad("ips must be a list")
    for i, ip in enumerate(ips):
        if not isinstance(ip, dict) or not _valid_cidr(ip.get("address")):
            raise bad(f"ips[{i}].address must be an address in CIDR form")
        if ip.get("gateway") is not None and not _valid_ip(ip["gateway"]):
            raise bad(f"ips[{i}].gateway {ip['gateway']!r} is not an IP address")
        if "interface" in ip and ip["interface"] is not None:
            idx = ip["interface"]
            if not isinstance(idx, int) or isinstance(idx, bool) \
                    or not 0 <= idx < len(interfaces):
                raise bad(f"ips[{i}].interface {idx!r} is not an index into interfaces")
    routes = result.get("routes", [])
    if not isinstance(routes, list):
        raise bad("routes must be a list")
    for i, route in enumerate(routes):
        if not isinstance(route, dict) or not _valid_cidr(route.get("dst")):
            raise bad(f"routes[{i}].dst must be a CIDR")
        if route.get("gw") is not None and not _valid_ip(route["gw"]):
            raise bad(f"routes[{i}].gw {route['gw']!r} is not an IP address")
    if "dns" in result and not isinstance(result["dns"], dict):
        raise bad("dns must be an object")
    return result


def parse_error(stdout: bytes, stderr: bytes, returncode: int, *, plugin: str = "",
                command: str = "", network: str = "") -> CniError:
    """Turn a failed plugin run into a CniError, from its error JSON when it printed one."""
    text = stdout.decode(errors="replace").strip()
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("msg" in doc or "code" in doc):
        code = doc.get("code")
        return CniError(str(doc.get("msg") or "plugin reported an error"),
                        code=code if isinstance(code, int) else None,
                        details=str(doc.get("details") or ""), plugin=plugin,
                        command=command, network=network)
    err = stderr.decode(errors="replace").strip()
    lines = [ln for ln in (err or text).splitlines() if ln.strip()]
    msg = " | ".join(lines[-3:]) if lines else f"exit status {returncode}, no output"
    return CniError(msg, plugin=plugin, command=command, network=network)




def summarize(result: dict[str, Any], ifname: str = "eth0") -> dict[str, Any]:
    """The pod-facing facts of a result: ip, address, cidr, gateway, mac of `ifname`."""
    interfaces = result.get("interfaces") or []
    ips = list(result.get("ips") or [])
    for key in ("ip4", "ip6"):  # results before 0.3.0
        block = result.get(key)
        if isinstance(block, dict) and block.get("ip"):
            ips.append({"address": block["ip"], "gateway": block.get("gateway")})

    def in_sandbox(ip: dict[str, Any]) -> bool:
        idx = ip.get("interface")
        if not isinstance(idx, int) or not 0 <= idx < len(interfaces):
            return False
        iface = interfaces[idx]
        return bool(iface.get("sandbox")) and iface.get("name") == ifname

    chosen = next((ip for ip in ips if in_sandbox(ip)), None)
    chosen = chosen or next((ip for ip in ips
                             if ipaddress.ip_interface(ip["address"]).version == 4), None)
    chosen = chosen or (ips[0] if ips else None)
    iface = next((i for i in interfaces if i.get("name") == ifname and i.get("sandbox")), None)
    out: dict[str, Any] = {"ip": None, "address": None, "cidr": None, "gateway": None,
                           "mac": iface.get("mac") if iface else None}
    if chosen is not None:
        addr = ipaddress.ip_interface(chosen["address"])
        out.update(ip=str(addr.ip), address=str(addr), cidr=str(addr.network),
                   gateway=chosen.get("gateway"))
    return out
