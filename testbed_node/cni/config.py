"""Network configuration: versions, .conf/.conflist loading, plugin search."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed_node.cni.errors import (
    CONF_EXTENSIONS,
    DEFAULT_CNI_PATH,
    DEFAULT_CONF_DIR,
    ID_RE,
    SUPPORTED_VERSIONS,
    VERSION_RE,
    CniError,
)


def parse_version(text: str) -> tuple[int, int, int]:
    """`1.0.0` -> (1, 0, 0); raises CniError for anything else."""
    m = VERSION_RE.match(text or "")
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
    if not isinstance(name, str) or not ID_RE.match(name):
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


