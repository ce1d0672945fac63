"""Orchestrator-side client of the in-node agent (`python3 -m testbed_node` via exec)."""

from __future__ import annotations

import json
from typing import Any

from testbed.errors import StepError
from testbed.provider.base import Provider
from testbed_contract.agent import PodRecord, ProbeReply, ProbeTarget
from testbed_contract.node import AGENT_CMD, PROBE_MODULE


def header_args(headers: dict[str, str] | None) -> list[str]:
    """`--header 'Name: value'` pairs for the probe."""
    return [a for k, v in (headers or {}).items() for a in ("--header", f"{k}: {v}")]


def probe_from(provider: Provider, container: str, url: str, count: int = 1,
               timeout: float = 2.0, headers: dict[str, str] | None = None) -> ProbeReply:
    """HTTP from a container's own network namespace (a node, the outside client): the
    agent's probe module, not curl, so every probe reports the same way."""
    res = provider.exec(container, ["python3", "-m", PROBE_MODULE, url, "--count", str(count),
                                    "--timeout", str(timeout), *header_args(headers)])
    try:
        reply: ProbeReply = json.loads(res.stdout)
    except ValueError as e:
        why = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise StepError(f"{container}: the probe of {url} failed: {why}") from e
    return reply


def probe_many_from(provider: Provider, container: str, targets: list[ProbeTarget]
                    ) -> list[ProbeReply]:
    """Several probes from a container's own network namespace in one exec, concurrently;
    the replies in the targets' order."""
    res = provider.exec(container, ["python3", "-m", PROBE_MODULE, "--batch",
                                    json.dumps(targets)])
    try:
        replies: list[ProbeReply] = json.loads(res.stdout)
    except ValueError as e:
        why = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise StepError(f"{container}: the batched probe of {len(targets)} URLs failed: "
                        f"{why}") from e
    return _matched(container, targets, replies)


def _matched(where: str, targets: list[ProbeTarget], replies: Any) -> list[ProbeReply]:
    """The replies, checked to be one per target."""
    if not isinstance(replies, list) or len(replies) != len(targets):
        raise StepError(f"{where}: the batched probe answered "
                        f"{len(replies) if isinstance(replies, list) else 'no list'} "
                        f"for {len(targets)} URLs")
    return replies


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

    def pod_add(self, name: str, containers: list[str]) -> PodRecord:
        """Create a pod (netns + CNI ADD + its processes)."""
        args = ["pod", "add", name]
        for spec in containers:
            args += ["--container", spec]
        result: PodRecord = self.call(*args)
        return result

    def pod_add_many(self, pods: list[tuple[str, list[str]]], wait_cni: float = 0.0,
                     cni_files: tuple[str, ...] = ()) -> list[PodRecord]:
        """Create several pods in one agent call; their workloads boot side by side.

        With `wait_cni`, the same call first waits for the CNI as `ready` does.
        """
        arg = json.dumps([{"name": name, "containers": specs} for name, specs in pods])
        wait = ["--wait-cni", str(wait_cni), *(a for f in cni_files for a in ("--cni-file", f))
                ] if wait_cni else []
        result: list[PodRecord] = self.call("pod", "add-many", arg, *wait)
        return result

    def pod_del(self, name: str) -> Any:
        """Delete a pod (processes, CNI DEL, netns)."""
        return self.call("pod", "del", name)

    def pods(self) -> list[PodRecord]:
        """Every pod on this node."""
        result: list[PodRecord] = self.call("pod", "list")
        return result

    def probe(self, pod: str, url: str, count: int = 3, timeout: float = 3,
              headers: dict[str, str] | None = None) -> ProbeReply:
        """HTTP from inside a pod; the agent measures latency."""
        result: ProbeReply = self.call(
            "probe", pod, url, "--count", str(count), "--timeout", str(timeout),
            *header_args(headers))
        return result

    def probe_many(self, pod: str, targets: list[ProbeTarget]) -> list[ProbeReply]:
        """Several HTTP probes from inside a pod in one agent call, run concurrently there;
        the replies in the targets' order."""
        return _matched(f"{self.node}/{pod}", targets,
                        self.call("probe-many", pod, json.dumps(targets)))
