"""A CNI runtime per CNI spec 1.0: config loading, plugin chaining and a libcni result cache."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed_node import AgentError

DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_PATH = "/opt/cni/bin"
DEFAULT_CACHE_DIR = "/var/lib/cni"
DEFAULT_TIMEOUT = 120.0
CONF_EXTENSIONS = (".conf", ".conflist", ".json")
CACHE_KIND = "cniCacheV1"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_CAPABILITY_ARGS: dict[str, Any] = {"portMappings": []}

# Well-known error codes of the CNI spec (1-99 are reserved for the spec).
ERROR_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
    50: "plugin not available",
    51: "plugin not available: limited connectivity",
    999: "internal plugin error",
}

_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class CniError(AgentError):
    """A failed CNI operation, with the plugin's error code, message and details."""

    def __init__(self, msg: str, *, code: int | None = None, details: str = "",
                 plugin: str = "", command: str = "", network: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.details = details
        self.plugin = plugin
        self.command = command
        self.network = network

    def __str__(self) -> str:
        text = self.msg
        if self.details and self.details not in text:
            text += f" ({self.details})"
        if self.code is not None:
            text += f" [code {self.code}: {ERROR_CODES.get(self.code, 'plugin-specific')}]"
        if not self.command:
            return text
        where = f"CNI {self.command} failed"
        if self.plugin:
            where += f" in plugin {self.plugin!r}"
        if self.network:
            where += f" of network {self.network!r}"
        return f"{where}: {text}"

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-able fields."""
        return {"code": self.code, "msg": self.msg, "details": self.details,
                "plugin": self.plugin, "command": self.command, "network": self.network}


def parse_version(text: str) -> tuple[int, int, int]:
    """`1.0.0` -> (1, 0, 0); raises CniError for anything else."""
    m = _VERSION_RE.match(text or "")
    if not m:
        raise CniError(f"invalid cniVersion {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def version_ge(a: str, b: str) -> bool:
    """Whether CNI version `a` >= `b`."""
    return parse_version(a) >= parse_version(b)


@dataclass(frozen=True)
class NetworkConfigList:
    """A network configuration list (a .conflist, or a single .conf wrapped as one)."""

    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    disable_check: bool = False
    raw: bytes = b""
    source: str = ""

    def plugin_types(self) -> list[str]:
        """Every executable the list names: plugin types, their IPAM and delegate types."""
        types: list[str] = []
        for plugin in self.plugins:
            for name in (plugin.get("type"), (plugin.get("ipam") or {}).get("type"),
                         (plugin.get("delegate") or {}).get("type")):
                if isinstance(name, str) and name and name not in types:
                    types.append(name)
        return types


def _check_plugin(plugin: Any, source: str, index: int) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise CniError(f"{source}: plugin {index} is not an object")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CniError(f"{source}: plugin {index} has no \"type\"")
    if "/" in ptype or ptype in (".", ".."):
        raise CniError(f"{source}: plugin type {ptype!r} is not a plain name")
    return plugin


def _check_header(name: Any, version: Any, source: str) -> tuple[str, str]:
    if not isinstance(name, str) or not _ID_RE.match(name):
        raise CniError(f"{source}: missing or invalid network \"name\"")
    version = version or "0.1.0"
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise CniError(f"{source}: unsupported cniVersion {version!r} "
                       f"(supported: {', '.join(SUPPORTED_VERSIONS)})")
    return name, version


def _json_object(data: bytes, source: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CniError(f"{source}: invalid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise CniError(f"{source}: not a JSON object")
    return doc


def conflist_from_bytes(data: bytes, source: str = "<bytes>") -> NetworkConfigList:
    """Parse a .conflist document."""
    doc = _json_object(data, source)
    name, version = _check_header(doc.get("name"), doc.get("cniVersion"), source)
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CniError(f"{source}: \"plugins\" must be a non-empty list")
    checked = [_check_plugin(p, source, i) for i, p in enumerate(plugins)]
    return NetworkConfigList(name=name, cni_version=version, plugins=checked,
                             disable_check=bool(doc.get("disableCheck", False)),
                             raw=data, source=source)


def conf_from_bytes(data: bytes, source: str = "<bytes>") -> NetworkConfigList:
    """Parse a single-plugin .conf/.json and wrap it as a one-plugin list, like libcni."""
    doc = _json_object(data, source)
    name, version = _check_header(doc.get("name"), doc.get("cniVersion"), source)
    plugin = _check_plugin(doc, source, 0)
    wrapped = {"cniVersion": version, "name": name, "plugins": [plugin]}
    return NetworkConfigList(name=name, cni_version=version, plugins=[plugin],
                             raw=json.dumps(wrapped).encode(), source=source)


def load_file(path: str | Path) -> NetworkConfigList:
    """Load one configuration file by its extension."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CniError(f"{p}: {e.strerror or e}") from e
    if p.suffix == ".conflist":
        return conflist_from_bytes(data, str(p))
    return conf_from_bytes(data, str(p))


def config_files(conf_dir: str | Path) -> list[Path]:
    """Candidate configuration files in a directory, in lexical order."""
    d = Path(conf_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix in CONF_EXTENSIONS and p.is_file())


def load_dir(conf_dir: str | Path = DEFAULT_CONF_DIR) -> NetworkConfigList:
    """The lexically first valid configuration in a directory (invalid files are skipped)."""
    skipped: list[str] = []
    for path in config_files(conf_dir):
        try:
            return load_file(path)
        except CniError as e:
            skipped.append(str(e))
    reason = f"no CNI network configuration in {conf_dir}"
    if skipped:
        reason += " (skipped: " + "; ".join(skipped) + ")"
    raise CniError(reason)


def search_path(value: str | None = None) -> list[str]:
    """CNI_PATH as a list of directories (env CNI_PATH, default /opt/cni/bin)."""
    raw = value if value is not None else os.environ.get("CNI_PATH", DEFAULT_CNI_PATH)
    return [d for d in raw.split(os.pathsep) if d] or [DEFAULT_CNI_PATH]


def find_plugin(ptype: str, paths: list[str]) -> str | None:
    """The first executable named `ptype` in `paths`, or None."""
    for d in paths:
        candidate = os.path.join(d, ptype)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


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
    if not isinstance(version, str) or not _VERSION_RE.match(version):
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


LOOPBACK_NETWORK = "cni-loopback"


def loopback() -> NetworkConfigList:
    """The network every pod gets first, as containerd does: the `loopback` plugin on lo."""
    return conflist_from_bytes(json.dumps({
        "cniVersion": "1.0.0", "name": LOOPBACK_NETWORK, "plugins": [{"type": "loopback"}],
    }).encode(), "<loopback>")


@dataclass
class RuntimeConf:
    """What one attachment is: container id, netns, interface name, CNI_ARGS, capabilities."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_CAPABILITY_ARGS))

    def validate(self) -> None:
        """Container id and interface name rules from libcni."""
        if not _ID_RE.match(self.container_id):
            raise CniError(f"invalid container id {self.container_id!r}")
        name = self.ifname
        if not name or len(name) > 15 or name in (".", "..") \
                or any(c in name for c in "/: \t\n"):
            raise CniError(f"invalid interface name {name!r}")


def build_config(plugin: dict[str, Any], netconf: NetworkConfigList,
                 prev_result: dict[str, Any] | None, rt: RuntimeConf) -> dict[str, Any]:
    """One plugin's stdin: its config plus name, cniVersion, prevResult and runtimeConfig."""
    conf = dict(plugin)
    conf["name"] = netconf.name
    conf["cniVersion"] = netconf.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    caps = plugin.get("capabilities") or {}
    runtime = {k: rt.capability_args[k] for k, on in caps.items()
               if on and k in rt.capability_args}
    if runtime:
        conf["runtimeConfig"] = runtime
    return conf


class CniRuntime:
    """Runs CNI plugins the way libcni does, and caches ADD results for DEL and CHECK."""

    def __init__(self, paths: list[str] | None = None, cache_dir: str = DEFAULT_CACHE_DIR,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.paths = paths if paths is not None else search_path()
        self.cache_dir = cache_dir
        self.timeout = timeout

    # -- plugin execution -------------------------------------------------------------

    def plugin_path(self, ptype: str, *, command: str = "", network: str = "") -> str:
        """Locate a plugin binary or raise naming the search path."""
        path = find_plugin(ptype, self.paths)
        if path is None:
            raise CniError(f"failed to find plugin {ptype!r} in path {self.paths}",
                           plugin=ptype, command=command, network=network)
        return path

    def _env(self, command: str, rt: RuntimeConf | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = os.pathsep.join(self.paths)
        if rt is not None:
            env["CNI_CONTAINERID"] = rt.container_id
            env["CNI_NETNS"] = rt.netns
            env["CNI_IFNAME"] = rt.ifname
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in rt.args)
        return env

    def exec_plugin(self, ptype: str, command: str, stdin: dict[str, Any],
                    rt: RuntimeConf | None, network: str = "") -> bytes:
        """Run one plugin; return its stdout or raise its error as a CniError."""
        path = self.plugin_path(ptype, command=command, network=network)
        try:
            proc = subprocess.run([path], input=json.dumps(stdin).encode(), capture_output=True,
                                  env=self._env(command, rt), timeout=self.timeout,
                                  cwd="/", check=False)
        except subprocess.TimeoutExpired as e:
            raise CniError(f"no answer within {self.timeout:g}s", plugin=ptype,
                           command=command, network=network) from e
        except OSError as e:
            raise CniError(f"cannot execute {path}: {e.strerror or e}", plugin=ptype,
                           command=command, network=network) from e
        if proc.returncode != 0:
            raise parse_error(proc.stdout, proc.stderr, proc.returncode, plugin=ptype,
                              command=command, network=network)
        return proc.stdout

    # -- the result cache (libcni's format) ---------------------------------------------

    def cache_path(self, network: str, rt: RuntimeConf) -> Path:
        """/var/lib/cni/results/<network>-<containerid>-<ifname>."""
        return Path(self.cache_dir, "results", f"{network}-{rt.container_id}-{rt.ifname}")

    def cache_add(self, netconf: NetworkConfigList, rt: RuntimeConf,
                  result: dict[str, Any]) -> None:
        """Record an ADD result as libcni does (cniCacheV1)."""
        doc: dict[str, Any] = {
            "kind": CACHE_KIND, "containerId": rt.container_id,
            "config": base64.b64encode(netconf.raw).decode(), "ifName": rt.ifname,
            "networkName": netconf.name, "netns": rt.netns, "result": result,
        }
        if rt.args:
            doc["cniArgs"] = [list(a) for a in rt.args]
        if rt.capability_args:
            doc["capabilityArgs"] = rt.capability_args
        path = self.cache_path(netconf.name, rt)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)

    def _cache_doc(self, network: str, rt: RuntimeConf) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.cache_path(network, rt).read_bytes())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def cached_result(self, network: str, rt: RuntimeConf) -> dict[str, Any] | None:
        """The cached ADD result, or None (a legacy cache file is the bare result)."""
        doc = self._cache_doc(network, rt)
        if doc is None:
            return None
        if doc.get("kind") == CACHE_KIND:
            result = doc.get("result")
            return result if isinstance(result, dict) and result else None
        return doc if "cniVersion" in doc else None

    def cached_config(self, network: str, rt: RuntimeConf) -> NetworkConfigList | None:
        """The configuration list the attachment was added with, if cached."""
        doc = self._cache_doc(network, rt)
        if doc is None or doc.get("kind") != CACHE_KIND or not doc.get("config"):
            return None
        try:
            raw = base64.b64decode(doc["config"])
            return conflist_from_bytes(raw, f"cache {self.cache_path(network, rt)}")
        except (ValueError, CniError):
            return None

    def cache_del(self, network: str, rt: RuntimeConf) -> None:
        """Forget an attachment's cached result."""
        self.cache_path(network, rt).unlink(missing_ok=True)

    # -- the operations ----------------------------------------------------------------

    def add(self, netconf: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any]:
        """ADD: run the plugins in order, each getting the previous result; cache the last."""
        rt.validate()
        result: dict[str, Any] | None = None
        for plugin in netconf.plugins:
            ptype = plugin["type"]
            out = self.exec_plugin(ptype, "ADD", build_config(plugin, netconf, result, rt), rt,
                                   netconf.name)
            try:
                doc = json.loads(out)
            except ValueError as e:
                text = out.decode(errors="replace").strip()[:200] or "no output"
                raise CniError(f"plugin printed no result JSON: {text!r}", plugin=ptype,
                               command="ADD", network=netconf.name) from e
            try:
                result = validate_result(doc, f"result of {ptype}")
            except CniError as e:
                e.plugin, e.command, e.network = ptype, "ADD", netconf.name
                raise
        assert result is not None
        self.cache_add(netconf, rt, result)
        return result

    def delete(self, netconf: NetworkConfigList, rt: RuntimeConf) -> None:
        """DEL: plugins in reverse order with the cached result; idempotent."""
        rt.validate()
        prev = None
        if version_ge(netconf.cni_version, "0.4.0"):
            prev = self.cached_result(netconf.name, rt)
        for plugin in reversed(netconf.plugins):
            self.exec_plugin(plugin["type"], "DEL", build_config(plugin, netconf, prev, rt), rt,
                             netconf.name)
        self.cache_del(netconf.name, rt)

    def check(self, netconf: NetworkConfigList, rt: RuntimeConf) -> bool:
        """CHECK every plugin against the cached result; False when the list disables it."""
        rt.validate()
        if not version_ge(netconf.cni_version, "0.4.0"):
            raise CniError(f"configuration version {netconf.cni_version!r} does not support "
                           "the CHECK command", command="CHECK", network=netconf.name)
        if netconf.disable_check:
            return False
        prev = self.cached_result(netconf.name, rt)
        if prev is None:
            raise CniError(f"no cached result at {self.cache_path(netconf.name, rt)}",
                           command="CHECK", network=netconf.name)
        for plugin in netconf.plugins:
            self.exec_plugin(plugin["type"], "CHECK", build_config(plugin, netconf, prev, rt),
                             rt, netconf.name)
        return True

    def version(self, ptype: str, cni_version: str = "1.0.0") -> dict[str, Any]:
        """VERSION: which spec versions a plugin supports."""
        out = self.exec_plugin(ptype, "VERSION", {"cniVersion": cni_version}, None)
        if not out.strip():
            return {"cniVersion": "0.1.0", "supportedVersions": ["0.1.0"]}
        try:
            doc = json.loads(out)
        except ValueError as e:
            raise CniError(f"invalid VERSION answer: {out[:200]!r}", plugin=ptype,
                           command="VERSION") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("supportedVersions"), list):
            raise CniError("VERSION answer lacks supportedVersions", plugin=ptype,
                           command="VERSION")
        return doc


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
