"""A CNI runtime per CNI spec 1.0: config loading, plugin chaining and a libcni result cache."""

from __future__ import annotations

from testbed_node.cni.config import (
    NetworkConfigList,
    conf_from_bytes,
    config_files,
    conflist_from_bytes,
    find_plugin,
    load_dir,
    load_file,
    parse_version,
    search_path,
    version_ge,
)
from testbed_node.cni.errors import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CNI_PATH,
    DEFAULT_CONF_DIR,
    DEFAULT_TIMEOUT,
    CniError,
)
from testbed_node.cni.result import parse_error, summarize, validate_result
from testbed_node.cni.runtime import CniRuntime, RuntimeConf, build_config, loopback

__all__ = [
    "DEFAULT_CACHE_DIR", "DEFAULT_CNI_PATH", "DEFAULT_CONF_DIR", "DEFAULT_TIMEOUT", "CniError",
    "CniRuntime", "NetworkConfigList", "RuntimeConf", "build_config", "conf_from_bytes",
    "config_files", "conflist_from_bytes", "find_plugin", "load_dir", "load_file", "loopback",
    "parse_error", "parse_version", "search_path", "summarize", "validate_result", "version_ge",
]
