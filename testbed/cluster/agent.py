"""Orchestrator-side client of the in-node agent (`python3 -m testbed_node` via exec)."""

from __future__ import annotations

import json
from typing import Any

from testbed.errors import StepError
from testbed.provider.base import Provider
from testbed_contract.node import AGENT_CMD


class NodeAgent:
    """Talks to the agent inside one node container; every answer is JSON."""

    def __init__(self, provider: Provider, node: str) -> None:
        self.provider = provider
        self.node = node

    def call(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """Run one agent command and return its parsed JSON, or raise with its error line."""
        res = self.provider.exec(self.node, [*AGENT_CMD, *args], env=env)
        try:
            data = json.loads(res.stdout) if res.stdout.strip() else None
        except json.JSONDecodeError:
            data = None
        if res.exit_code != 0:
            reason = data.get("error") if isinstance(data, dict) else None
            detail = reason or (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise StepError(f"{self.node}: agent {' '.join(args[:2])} failed: {detail}")
        return data

    def ready(self, timeout: float, files: tuple[str, ...] = ()) -> Any:
        """Wait until `files` are written and a conflist and its plugins are in place."""
        return self.call("ready", "--timeout", str(timeout),
                         *(a for f in files for a in ("--file", f)))

    def pod_add(self, name: str, containers: list[str]) -> dict[str, Any]:
        """Create a pod (netns + CNI ADD + its processes)."""
        args = ["pod", "add", name]
        for spec in containers:
            args += ["--container", spec]
        result: dict[str, Any] = self.call(*args)
        return result

    def pod_add_many(self, pods: list[tuple[str, list[str]]], wait_cni: float = 0.0,
                     cni_files: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Create several pods in one agent call; their workloads boot side by side.

        With `wait_cni`, the same call first waits for the CNI as `ready` does.
        """
        arg = json.dumps([{"name": name, "containers": specs} for name, specs in pods])
        wait = ["--wait-cni", str(wait_cni), *(a for f in cni_files for a in ("--cni-file", f))
                ] if wait_cni else []
        result: list[dict[str, Any]] = self.call("pod", "add-many", arg, *wait)
        return result

    def pod_del(self, name: str) -> Any:
        """Delete a pod (processes, CNI DEL, netns)."""
        return self.call("pod", "del", name)

    def pods(self) -> list[dict[str, Any]]:
        """Every pod on this node."""
        result: list[dict[str, Any]] = self.call("pod", "list")
        return result

    def probe(self, pod: str, url: str, count: int = 3, timeout: float = 3,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
        """HTTP from inside a pod; the agent measures latency."""
        extra = [a for k, v in (headers or {}).items() for a in ("--header", f"{k}: {v}")]
        result: dict[str, Any] = self.call(
            "probe", pod, url, "--count", str(count), "--timeout", str(timeout), *extra)
        return result
