"""The provider interface: the few container-engine operations a cluster needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class WaitStrategy(Protocol):
    """How to tell a started container is ready (testbed/lifecycle/wait.py has the kinds)."""

    def wait(self, provider: Provider, container: ContainerInfo) -> None: ...


@dataclass
class ContainerSpec:
    """Everything needed to create one container; CNI modules return these."""

    name: str
    image: str
    cluster: str
    role: str
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    network: str | None = None
    ip: str | None = None  # a fixed address on `network` (from the upper half of its subnet)
    network_mode: str | None = None
    pid_mode: str | None = None
    hostname: str | None = None
    volumes: dict[str, str] = field(default_factory=dict)
    binds: dict[str, str] = field(default_factory=dict)
    cap_add: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    init: bool = False
    restart: str | None = None
    privileged: bool = False  # only `doctor` asks, to report whether the engine allows it
    wait: WaitStrategy | None = None  # `run` returns once this says the container is ready


@dataclass(frozen=True)
class ContainerInfo:
    """A container as found again from its labels."""

    id: str
    name: str
    role: str
    status: str
    image: str
    labels: dict[str, str]
    ip: str | None
    ips: dict[str, str] = field(default_factory=dict)  # network name -> address
    created: float = 0.0  # seconds since the epoch


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside a container returned."""

    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Usage:
    """One container's CPU and memory, as the engine measured them over its own window."""

    cpu_pct: float  # of one core
    mem_mib: float  # without the page cache
    cpu_s: float = 0.0  # CPU-seconds used since the container started (the cgroup counter)


class ImageStore(Protocol):
    """The engine's images: what the builder, the selection and the run records need."""

    def exists(self, ref: str) -> bool: ...

    def pull(self, ref: str) -> bool: ...

    def image_id(self, ref: str) -> str | None: ...

    def labels(self, ref: str) -> dict[str, str] | None: ...

    def build(self, context: str, tag: str, args: dict[str, str], labels: dict[str, str],
              on_step: Callable[[str], None]) -> None: ...

    def import_rootfs(self, tarball: str, tag: str, changes: list[str]) -> None: ...

    def load(self, data: bytes, source: str) -> list[str]: ...

    def remove(self, ref: str) -> None: ...


class Provider(Protocol):
    """Container-engine operations; Docker implements it (kind's provider, in small)."""

    def create_network(self, name: str, cluster: str, role: str, internal: bool = False,
                       avoid: tuple[str, ...] = ()) -> str: ...

    @property
    def images(self) -> ImageStore: ...

    def engine(self) -> dict[str, Any]: ...

    def connect(self, container: str, network: str) -> str: ...

    def network_subnet(self, name: str) -> str: ...

    def create_volume(self, name: str, cluster: str, role: str) -> str: ...

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a container, then wait for `spec.wait` if it has one."""
        ...

    def run_once(self, spec: ContainerSpec, timeout: float = 60) -> ExecResult: ...

    def exec(self, container: str, argv: list[str], env: dict[str, str] | None = None,
             user: str = "") -> ExecResult: ...

    def spawn(self, container: str, argv: list[str], env: dict[str, str] | None = None
              ) -> None: ...

    def get_files(self, container: str, path: str) -> dict[str, bytes]: ...

    def read_file(self, container: str, path: str) -> str: ...

    def put_file(self, container: str, path: str, content: str | bytes, mode: int = 0o644
                 ) -> None: ...

    def put_archive(self, container: str, path: str, data: bytes) -> None: ...

    def published_port(self, container: str, port: str) -> int: ...

    def stats(self, container: str, one_shot: bool = False) -> Usage: ...

    def logs(self, container: str, tail: int = 50) -> str: ...

    def restart(self, container: str) -> None: ...

    def stop(self, container: str) -> None: ...

    def start(self, container: str) -> None: ...

    def containers(self, cluster: str | None = None, role: str | None = None
                   ) -> list[ContainerInfo]: ...

    def networks(self, cluster: str) -> list[str]:
        """Names of the networks labelled with this cluster."""
        ...

    def volumes(self, cluster: str, role: str | None = None) -> list[str]:
        """Names of the volumes labelled with this cluster (and role)."""
        ...

    def clusters(self) -> list[str]: ...

    def delete_cluster(self, cluster: str) -> None: ...
