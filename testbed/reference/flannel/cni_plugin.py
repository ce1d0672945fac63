#!/usr/bin/python3
"""Reference `flannel` CNI meta-plugin: subnet.env + conf -> a bridge/host-local delegate."""

# Self-contained on purpose: the image's only file, /flannel, is this script, copied alone
# into a node's /opt/cni/bin and run there by the node's python3. Standard library only.

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

PROGRAM = "flannel"
VERSION = "v1.9.0-flannel1-testbed-reference"
DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")
CURRENT_VERSION = "1.0.0"
ERR_INCOMPATIBLE = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_INVALID_ENV = 4
ERR_DECODE = 6
ERR_INVALID_NETCONF = 7
ERR_INTERNAL = 999
ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "VERSION": (),
}


class CniError(Exception):
    """A CNI error result: printed as {"cniVersion","code","msg"[,"details"]}, exit non-zero."""

    def __init__(self, code: int, msg: str, details: str = "", exit_code: int = 1) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.exit_code = exit_code
        self.raw: str | None = None  # a delegate's own error output, passed through verbatim

    def to_json(self, cni_version: str) -> str:
        """The spec's error object."""
        if self.raw is not None:
            return self.raw
        doc: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            doc["details"] = self.details
        return json.dumps(doc)


# --------------------------------------------------------------------------
# inputs: the network config on stdin and flanneld's subnet file
# --------------------------------------------------------------------------
def load_netconf(data: bytes) -> dict[str, Any]:
    """The plugin's conf with upstream's defaults for subnetFile and dataDir."""
    try:
        conf = json.loads(data or b"{}")
    except ValueError as e:
        raise CniError(ERR_DECODE, f"failed to load netconf: {e}") from e
    if not isinstance(conf, dict):
        raise CniError(ERR_DECODE, "failed to load netconf: not a JSON object")
    conf.setdefault("subnetFile", DEFAULT_SUBNET_FILE)
    conf.setdefault("dataDir", DEFAULT_DATA_DIR)
    if not conf["subnetFile"]:
        conf["subnetFile"] = DEFAULT_SUBNET_FILE
    if not conf["dataDir"]:
        conf["dataDir"] = DEFAULT_DATA_DIR
    return conf


@dataclass
class SubnetEnv:
    """What flanneld wrote: networks, this node's subnet, MTU and whether it masquerades."""

    networks: list[str] = field(default_factory=list)
    subnet: str | None = None
    mtu: int | None = None
    ipmasq: bool | None = None

    def missing(self) -> str:
        """The keys upstream requires that are absent, comma-separated."""
        miss = []
        if not self.networks:
            miss += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
        if self.subnet is None:
            miss += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]
        if self.mtu is None:
            miss.append("FLANNEL_MTU")
        if self.ipmasq is None:
            miss.append("FLANNEL_IPMASQ")
        return ", ".join(miss)


def _cidr(value: str) -> str:
    """Go's net.ParseCIDR then String(): the masked network."""
    return str(ipaddress.ip_network(value.strip(), strict=False))


def parse_subnet_env(text: str) -> SubnetEnv:
    """Parse subnet.env the way upstream's loadFlannelSubnetEnv does."""
    env = SubnetEnv()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "FLANNEL_NETWORK":
            for cidr in (_cidr(c) for c in value.split(",")):
                if cidr not in env.networks:
                    env.networks.append(cidr)
        elif key == "FLANNEL_SUBNET":
            env.subnet = _cidr(value)
        elif key == "FLANNEL_MTU":
            env.mtu = int(value)
        elif key == "FLANNEL_IPMASQ":
            env.ipmasq = value == "true"
    return env


def load_subnet_env(path: str) -> SubnetEnv:
    """Read and check the subnet file (errors worded like upstream's)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        raise CniError(ERR_INTERNAL, f"loadFlannelSubnetEnv failed: open {path}: "
                       "no such file or directory") from e
    except OSError as e:
        raise CniError(ERR_INTERNAL, f"loadFlannelSubnetEnv failed: {e}") from e
    try:
        env = parse_subnet_env(text)
    except ValueError as e:
        raise CniError(ERR_INTERNAL, f"loadFlannelSubnetEnv failed: {e}") from e
    missing = env.missing()
    if missing:
        raise CniError(ERR_INTERNAL, f"loadFlannelSubnetEnv failed: {path} is missing {missing}")
    return env


# --------------------------------------------------------------------------
# the delegate config (flannel_linux.go's doCmdAdd)
# --------------------------------------------------------------------------
def check_delegate(conf: dict[str, Any]) -> dict[str, Any]:
    """conf.delegate, validated as upstream does (no name, no ipam, string type)."""
    delegate = conf.get("delegate")
    if delegate is None:
        return {}
    if not isinstance(delegate, dict):
        raise CniError(ERR_DECODE, "failed to load netconf: 'delegate' must be an object")
    if "type" in delegate and not isinstance(delegate["type"], str):
        raise CniError(ERR_INTERNAL,
                       "'delegate' dictionary, if present, must have (string) 'type' field")
    if "name" in delegate:
        raise CniError(ERR_INTERNAL,
                       "'delegate' dictionary must not have 'name' field, it'll be set by flannel")
    if "ipam" in delegate:
        raise CniError(ERR_INTERNAL,
                       "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel")
    return dict(delegate)


def delegate_ipam(conf: dict[str, Any], env: SubnetEnv) -> dict[str, Any]:
    """host-local over this node's subnet, routing the flannel network(s) via the bridge."""
    ipam = dict(conf.get("ipam") or {})
    ipam.setdefault("type", "host-local")
    ipam["ranges"] = [[{"subnet": env.subnet}]] if env.subnet else []
    routes = list(ipam.get("routes") or [])
    if not all(isinstance(r, dict) for r in routes):
        raise CniError(ERR_INTERNAL, "failed to assemble Delegate IPAM: failed to read IPAM "
                       "routes: failed to parse ipam.routes")
    routes += [{"dst": net} for net in env.networks]
    ipam["routes"] = routes
    return ipam


def build_delegate(conf: dict[str, Any], env: SubnetEnv) -> dict[str, Any]:
    """The bridge (default) delegate config flannel hands to the real plugin."""
    delegate = check_delegate(conf)
    if conf.get("runtimeConfig") is not None:
        delegate["runtimeConfig"] = conf["runtimeConfig"]
    delegate["name"] = conf.get("name", "")
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    if conf.get("cniVersion"):
        delegate["cniVersion"] = conf["cniVersion"]
    delegate["ipam"] = delegate_ipam(conf, env)
    return delegate


def encode(doc: dict[str, Any]) -> bytes:
    """Go's json.Marshal of a map: compact, keys sorted."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# scratch files (dataDir/<container id>) and delegate execution
# --------------------------------------------------------------------------
def scratch_path(data_dir: str, container_id: str) -> str:
    """Where ADD saves the delegate config for DEL."""
    return os.path.join(data_dir, container_id)


def save_scratch(data_dir: str, container_id: str, data: bytes) -> None:
    """Write and fsync the delegate config (mode 0600, dir 0700)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    fd = os.open(scratch_path(data_dir, container_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_scratch(data_dir: str, container_id: str) -> bytes | None:
    """The saved delegate config, or None when there is none."""
    try:
        with open(scratch_path(data_dir, container_id), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def find_plugin(name: str, cni_path: str) -> str:
    """The first executable `name` in CNI_PATH."""
    dirs = [d for d in cni_path.split(os.pathsep) if d]
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CniError(ERR_INTERNAL, f"failed to find plugin \"{name}\" in path {dirs}")


def exec_delegate(command: str, plugin: str, data: bytes, environ: dict[str, str]) -> str:
    """Run the delegate with our env (CNI_COMMAND set); its stdout, or its error passed up."""
    path = find_plugin(plugin, environ.get("CNI_PATH", ""))
    env = dict(environ, CNI_COMMAND=command)
    proc = subprocess.run([path], input=data, env=env, capture_output=True, check=False)
    sys.stderr.write(proc.stderr.decode(errors="replace"))
    out = proc.stdout.decode(errors="replace")
    if proc.returncode == 0:
        return out
    err = CniError(ERR_INTERNAL, f"failed to delegate {command.lower()}: {plugin} exited "
                   f"{proc.returncode}: {out.strip() or proc.stderr.decode(errors='replace')}",
                   exit_code=proc.returncode)
    if _is_error_json(out):
        err.raw = out.strip()
    raise err


def _is_error_json(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and "code" in doc


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------
def cmd_add(conf: dict[str, Any], environ: dict[str, str]) -> str:
    """Build and save the delegate config, then delegate ADD."""
    env = load_subnet_env(conf["subnetFile"])
    delegate = build_delegate(conf, env)
    data = encode(delegate)
    sys.stderr.write("delegateAdd: netconf sent to delegate plugin:\n")
    sys.stderr.write(data.decode() + "\n")
    save_scratch(conf["dataDir"], environ["CNI_CONTAINERID"], data)
    return exec_delegate("ADD", delegate["type"], data, environ)


def cmd_del(conf: dict[str, Any], environ: dict[str, str]) -> str:
    """Delegate DEL with the saved config; nothing saved means nothing to do."""
    data = read_scratch(conf["dataDir"], environ["CNI_CONTAINERID"])
    if data is None:
        return ""
    try:
        saved = json.loads(data)
        plugin = saved["type"]
    except (ValueError, KeyError, TypeError):
        sys.stderr.write("failed to parse netconf: saved delegate config is unreadable\n")
        return ""
    out = exec_delegate("DEL", plugin, data, environ)
    with contextlib.suppress(OSError):
        os.remove(scratch_path(conf["dataDir"], environ["CNI_CONTAINERID"]))
    return out


def cmd_check(conf: dict[str, Any], environ: dict[str, str]) -> str:
    """Succeed without output, as upstream does (its cmdCheck is a TODO returning nil).

    Delegating to Debian's bridge CHECK would fail every healthy flannel pod: bridge
    expects the gateway-less ipam route it was given, host-local installs it via the gateway.
    """
    return ""


def cmd_version() -> str:
    """The versions this plugin speaks."""
    return json.dumps({"cniVersion": CURRENT_VERSION,
                       "supportedVersions": list(SUPPORTED_VERSIONS)})


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.3.1' -> (0, 3, 1); unparseable -> ()."""
    try:
        return tuple(int(x) for x in version.split("."))
    except ValueError:
        return ()


def check_env(command: str, environ: dict[str, str]) -> None:
    """The variables the spec requires for a command, and sane ids (skel's checks)."""
    if command not in REQUIRED_ENV:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {command}")
    missing = [k for k in REQUIRED_ENV[command] if not environ.get(k)]
    if missing:
        raise CniError(ERR_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    cid = environ.get("CNI_CONTAINERID")
    if cid is not None and not ID_RE.match(cid):
        raise CniError(ERR_INVALID_ENV, "invalid characters in containerID", cid)
    ifname = environ.get("CNI_IFNAME")
    if ifname is not None and (len(ifname) > 15 or ifname in (".", "..")
                               or any(c in ifname for c in "/: \t\n")):
        raise CniError(ERR_INVALID_ENV, "invalid interface name", ifname)


def check_version(conf: dict[str, Any], command: str) -> str:
    """The conf's cniVersion, rejected when this plugin does not speak it."""
    version = str(conf.get("cniVersion") or "0.1.0")
    if version not in SUPPORTED_VERSIONS:
        supported = " ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)  # Go's %q of a slice
        raise CniError(ERR_INCOMPATIBLE, "incompatible CNI versions",
                       f'config is "{version}", plugin supports [{supported}]')
    if command == "CHECK" and version_tuple(version) < (0, 4, 0):
        raise CniError(ERR_UNSUPPORTED_FIELD, "config version does not allow CHECK")
    name = conf.get("name")
    if command != "VERSION" and name is not None and not ID_RE.match(str(name)):
        raise CniError(ERR_INVALID_NETCONF, "invalid characters found in network name", str(name))
    return version


def dispatch(command: str, stdin: bytes, environ: dict[str, str]) -> str:
    """Run one CNI command; returns what goes to stdout."""
    check_env(command, environ)
    if command == "VERSION":
        return cmd_version()
    conf = load_netconf(stdin)
    check_version(conf, command)
    if command == "ADD":
        return cmd_add(conf, environ)
    if command == "DEL":
        return cmd_del(conf, environ)
    return cmd_check(conf, environ)


def conf_version(stdin: bytes) -> str:
    """cniVersion of the conf (for error output), CURRENT_VERSION when unknown."""
    try:
        doc = json.loads(stdin or b"{}")
    except ValueError:
        return CURRENT_VERSION
    return str(doc.get("cniVersion") or CURRENT_VERSION) if isinstance(doc, dict) \
        else CURRENT_VERSION


def main() -> int:
    """CNI entrypoint: CNI_COMMAND and friends in the env, the conf on stdin."""
    environ = dict(os.environ)
    command = environ.get("CNI_COMMAND", "")
    if not command:
        sys.stderr.write(f"CNI Plugin {PROGRAM} version {VERSION}\n"
                         f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}\n")
        return 0
    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    try:
        out = dispatch(command, stdin, environ)
    except CniError as e:
        sys.stdout.write(e.to_json(conf_version(stdin)) + "\n")
        return e.exit_code or 1
    except Exception as e:  # anything unexpected still answers in CNI's error shape
        sys.stdout.write(CniError(ERR_INTERNAL, str(e)).to_json(conf_version(stdin)) + "\n")
        return 1
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
