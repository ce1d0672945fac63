"""CNI spec constants and the error a plugin returns (codes, messages, details)."""

from __future__ import annotations

import re
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

ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


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


