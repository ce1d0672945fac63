"""Waiting for every node's service rules at once: each daemon's status file against the
endpoints the registry should give (one poll over the nodes still behind, one deadline)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import ProviderError
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider
from testbed_contract.node import DAEMON_LOG_FILE as DAEMON_LOG
from testbed_contract.node import DAEMON_STATUS_FILE as DAEMON_STATUS
from testbed_contract.registry import Pod

SHOWN = 6  # missing endpoints named per node in a timeout's report


@dataclass
class NodeRules:
    """Which nodes' daemons report rules with exactly the wanted endpoints."""

    provider: Provider
    nodes: list[str]
    want: dict[str, list[str]]
    pods: list[Pod]
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pending = list(self.nodes)

    def _status(self, node: str) -> dict[str, Any]:
        # The status file the daemon rewrites after every look (cheaper than the agent).
        try:
            doc = json.loads(self.provider.read_file(node, DAEMON_STATUS))
        except (ProviderError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def got(self, node: str) -> dict[str, list[str]]:
        """The endpoints per service port that the node's last status lists."""
        services = self.last.get(node, {}).get("services") or {}
        return {k: sorted(v) for k, v in services.items()}

    def poll(self) -> bool:
        """Read the status of every node still behind; True once none is."""
        for node, doc in zip(self.pending, parallel(self._status, self.pending), strict=True):
            self.last[node] = doc
        self.pending = [n for n in self.pending if self.got(n) != self.want]
        return not self.pending

    def missing(self, node: str) -> list[str]:
        """The wanted endpoints the node lacks, each with its pod and that pod's node."""
        owner = {p.ip: p for p in self.pods}
        got = self.got(node)
        out = []
        for port, eps in sorted(self.want.items()):
            for ep in sorted(set(eps) - set(got.get(port, []))):
                pod = owner.get(ep.rsplit(":", 1)[0])
                where = f" ({pod.name} on {pod.node})" if pod else ""
                out.append(f"{port} {ep}{where}")
        return out

    def report(self) -> str:
        """For a timeout: the nodes behind, what each lacks, the first one's status and log."""
        lines = [f"{len(self.pending)} of {len(self.nodes)} nodes behind: "
                 + ", ".join(self.pending)]
        for node in self.pending:
            gaps = self.missing(node)
            extra = f" and {len(gaps) - SHOWN} more" if len(gaps) > SHOWN else ""
            lines.append(f"{node} lacks {len(gaps)}: {'; '.join(gaps[:SHOWN])}{extra}"
                         if gaps else f"{node}: {self.last.get(node) or 'no status yet'}")
        if self.pending:
            first = self.pending[0]
            try:
                tail = "\n".join(self.provider.read_file(first, DAEMON_LOG).splitlines()[-20:])
            except ProviderError as e:
                tail = str(e)
            lines += [f"last status of {first}: {self.last.get(first)}", tail]
        return "\n".join(lines)
