"""The CNI runtime: chaining a network's plugins for ADD/CHECK/DEL with a libcni cache."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed_contract import atomic
from testbed_node.cni.config import (
    NetworkConfigList,
    conflist_from_bytes,
    find_plugin,
    search_path,
    version_ge,
)
from testbed_node.cni.errors import (
    CACHE_KIND,
    DEFAULT_CACHE_DIR,
    DEFAULT_CAPABILITY_ARGS,
    DEFAULT_TIMEOUT,
    ID_RE,
    CniError,
)
from testbed_node.cni.result import parse_error, validate_result

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
        if not ID_RE.match(self.container_id):
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
        atomic.write_text(path, json.dumps(doc), mode=0o600)

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


