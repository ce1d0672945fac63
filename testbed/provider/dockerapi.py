"""Docker SDK plumbing under the provider: the client, container creation, and translations
of the engine's documents (inspect, stats, version/info) into the provider's types."""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import (  # type: ignore[attr-defined]
    Container,
    _create_container_args,  # docker-py's own kwargs -> create_container arguments
)

from testbed.constants import LABEL_CLUSTER, LABEL_ROLE
from testbed.errors import UserError
from testbed.provider.base import ContainerInfo, Usage


def connect() -> docker.DockerClient:
    """A Docker client, or a one-line reason the engine cannot be reached."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise UserError(
            f"cannot reach the Docker engine ({e.__class__.__name__}): start one with "
            "`sudo bash testbed/provider/engine.sh` (installs Debian's docker.io and starts "
            "dockerd), or set DOCKER_HOST"
        ) from e
    return client


def create_container(client: docker.DockerClient, image: str, **kw: Any) -> Container:
    """`containers.create`, plus the docker CLI's `systempaths=unconfined` security option
    (not an engine option): it becomes empty MaskedPaths and ReadonlyPaths, as the CLI does."""
    opts = kw.get("security_opt") or []
    if "systempaths=unconfined" not in opts:
        return client.containers.create(image, **kw)
    kw["security_opt"] = [o for o in opts if o != "systempaths=unconfined"] or None
    args = _create_container_args({"image": image, **kw, "version": client.api.api_version})
    args["host_config"]["MaskedPaths"] = []
    args["host_config"]["ReadonlyPaths"] = []
    return client.containers.get(client.api.create_container(**args)["Id"])


def labels(cluster: str, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The labels every testbed object carries: its cluster and role."""
    return {LABEL_CLUSTER: cluster, LABEL_ROLE: role, **(extra or {})}


def info(c: Container) -> ContainerInfo:
    """A container as the provider describes it."""
    attrs = c.attrs
    nets = attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
    ips = {name: str(n["IPAddress"]) for name, n in nets.items() if n.get("IPAddress")}
    found = attrs.get("Config", {}).get("Labels", {}) or {}
    # A node may sit on a second network (<cluster>-internet): its address is the cluster one.
    primary = f"{found.get(LABEL_CLUSTER, '')}-net"
    ip = ips.get(primary) or next(iter(ips.values()), None)
    return ContainerInfo(
        id=c.id or "", name=c.name or "", role=found.get(LABEL_ROLE, ""),
        status=c.status, image=attrs.get("Config", {}).get("Image", ""),
        labels=found, ip=ip, ips=ips, created=_created(attrs.get("Created", "")),
    )


def _created(text: str) -> float:
    """Docker's RFC 3339 timestamp (nanoseconds, `Z`) as seconds since the epoch."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", text or "")
    if not m:
        return 0.0
    frac = (m.group(2) or ".0")[:7]
    return datetime.fromisoformat(m.group(1) + frac + "+00:00").timestamp()


def usage(s: dict[str, Any]) -> Usage:
    """CPU (% of one core, over the engine's sampling window) and memory without page cache."""
    cpu, pre = s.get("cpu_stats", {}), s.get("precpu_stats", {})
    delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - \
        pre.get("cpu_usage", {}).get("total_usage", 0)
    system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
    pct = round(100.0 * delta / system * cpus, 2) if system > 0 and delta >= 0 else 0.0
    mem = s.get("memory_stats", {})
    stats = mem.get("stats", {})
    cache = stats.get("inactive_file", stats.get("total_inactive_file", 0))
    total = cpu.get("cpu_usage", {}).get("total_usage", 0)
    return Usage(pct, round(float(mem.get("usage", 0) - cache) / 2**20, 1), total / 1e9)


def engine_facts(client: docker.DockerClient) -> dict[str, Any]:
    """The engine's version, kernel, storage, cgroups and size, and whether it runs here."""
    version = client.version()
    info = client.info()
    kernel = info.get("KernelVersion") or version.get("KernelVersion", "")
    security = info.get("SecurityOptions") or []
    return {
        "reachable": True,
        "engine_version": version.get("Version", ""),
        "api_version": version.get("ApiVersion", ""),
        "os": info.get("OperatingSystem", ""),
        "kernel": kernel,
        "arch": info.get("Architecture", ""),
        "storage_driver": info.get("Driver", ""),
        "cgroup_version": str(info.get("CgroupVersion", "")),
        "cgroup_driver": info.get("CgroupDriver", ""),
        "root_dir": info.get("DockerRootDir", ""),
        "rootless": any("rootless" in s for s in security),
        "cpus": info.get("NCPU"),
        "memory_bytes": info.get("MemTotal"),
        "local": kernel == os.uname().release and info.get("Name") == socket.gethostname(),
    }


def text(data: object) -> str:
    """Exec output as text (Docker returns bytes, or None for an empty stream)."""
    return data.decode(errors="replace") if isinstance(data, bytes) else ""
