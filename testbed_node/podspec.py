"""A pod's containers as the agent is given them: NAME=http:PORT (nginx), NAME=pyhttp:PORT (the
Python server, with /bytes), NAME=sleep, NAME=cmd:ARGV."""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass

from testbed_contract.node import HTTP_KINDS, WORKLOAD_MODULE
from testbed_node import UsageError

DEFAULT_CONTAINERS = ("app=http:8080",)
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ContainerSpec:
    """One process of a pod: an http workload server, a sleeper, or a command."""

    name: str
    kind: str
    port: int | None = None
    argv: tuple[str, ...] = ()

    def command(self) -> list[str]:
        """The argv this container runs."""
        if self.kind in HTTP_KINDS:
            server = "nginx" if self.kind == "http" else "python"
            return [sys.executable, "-m", WORKLOAD_MODULE, "--port", str(self.port),
                    "--container", self.name, "--server", server]
        if self.kind == "sleep":
            return ["sleep", "infinity"]
        return list(self.argv)


def check_name(name: str, what: str = "pod") -> str:
    """Names become netns and file names: DNS labels only."""
    if not _NAME_RE.match(name):
        raise UsageError(f"invalid {what} name {name!r}: use 1-63 lowercase letters, digits "
                         "or '-', starting and ending with a letter or digit")
    return name


def parse_container_spec(text: str) -> ContainerSpec:
    """`NAME=http:PORT`, `NAME=sleep` or `NAME=cmd:ARGV...` (argv split like a shell, no shell)."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise UsageError(f"container spec {text!r} must look like NAME=http:PORT, NAME=sleep "
                         "or NAME=cmd:ARGV")
    check_name(name, "container")
    kind, _, arg = rest.partition(":")
    if kind in HTTP_KINDS:
        if not arg.isdigit() or not 1 <= int(arg) <= 65535:
            raise UsageError(f"container spec {text!r}: {kind} needs a port 1-65535")
        return ContainerSpec(name, kind, port=int(arg))
    if kind == "sleep" and not arg:
        return ContainerSpec(name, "sleep")
    if kind == "cmd":
        try:
            argv = shlex.split(arg)
        except ValueError as e:
            raise UsageError(f"container spec {text!r}: {e}") from e
        if not argv:
            raise UsageError(f"container spec {text!r}: cmd needs a command")
        return ContainerSpec(name, "cmd", argv=tuple(argv))
    raise UsageError(f"container spec {text!r}: kind must be http:PORT, pyhttp:PORT, "
                     "sleep or cmd:ARGV")


def check_specs(specs: list[ContainerSpec]) -> list[ContainerSpec]:
    """Container names and http ports must be unique within a pod."""
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UsageError(f"duplicate container name(s): {', '.join(sorted(dup))}")
    ports = [s.port for s in specs if s.port is not None]
    dup_ports = {p for p in ports if ports.count(p) > 1}
    if dup_ports:
        raise UsageError(f"containers share port(s) {sorted(dup_ports)} in one network namespace")
    return specs
