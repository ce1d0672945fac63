"""The Docker provider: containers, networks and volumes found again by their labels."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import posixpath
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from testbed.constants import LABEL_CLUSTER, LABEL_ROLE, NODE_SUBNET_POOL
from testbed.errors import ProviderError, UserError
from testbed.provider.base import ContainerInfo, ContainerSpec, ExecResult, Usage
from testbed.provider.dockerapi import (
    connect,
    create_container,
    engine_facts,
    info,
    labels,
    text,
    usage,
)
from testbed.provider.images import DockerImages

SUBNET_POOL = NODE_SUBNET_POOL  # see testbed.constants


class DockerProvider:
    """Provider implemented with the Docker SDK (never by parsing CLI output)."""

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self.client = client or connect()
        self.images = DockerImages(self.client)

    def engine(self) -> dict[str, Any]:
        """The engine's version, kernel, storage and cgroup facts (`doctor`, run records)."""
        return engine_facts(self.client)

    def create_network(self, name: str, cluster: str, role: str, internal: bool = False,
                       avoid: tuple[str, ...] = ()) -> str:
        """A user-defined bridge network on a free /24 of the testbed's pool; its subnet.

        Docker's default pools include 192.168.0.0/16, Calico's default pod pool, so the
        subnet is chosen explicitly: outside `avoid` (pod and service CIDRs) and every
        existing network. Docker hands out addresses from the lower half only; the upper
        half is for fixed ones (`ContainerSpec.ip`). `internal` networks get no route off
        the host.
        """
        taken = [ipaddress.ip_network(c) for c in avoid]
        for net in self.client.networks.list():
            for cfg in (net.attrs.get("IPAM", {}).get("Config") or []):
                if ":" not in cfg.get("Subnet", ":"):
                    taken.append(ipaddress.ip_network(cfg["Subnet"]))
        pool = ipaddress.ip_network(os.environ.get("TESTBED_SUBNET_POOL", SUBNET_POOL))
        last = ""
        for subnet in pool.subnets(new_prefix=24):
            if any(subnet.overlaps(t) for t in taken):
                continue
            dynamic = next(subnet.subnets(prefixlen_diff=1))
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet=str(subnet), iprange=str(dynamic),
                gateway=str(subnet.network_address + 1))])
            try:
                self.client.networks.create(
                    name, driver="bridge", labels=labels(cluster, role), check_duplicate=True,
                    internal=internal, ipam=ipam)
            except docker.errors.APIError as e:
                last = str(e.explanation)
                if "overlap" in last.lower():  # another cluster took it meanwhile
                    continue
                raise ProviderError(f"cannot create network {name}: {last}") from e
            return str(subnet)
        raise ProviderError(f"cannot create network {name}: no free /24 left in {pool} "
                            f"(set TESTBED_SUBNET_POOL) {last}".strip())

    def connect(self, container: str, network: str) -> str:
        """Attach a running container to one more network; return its address there."""
        try:
            self.client.networks.get(network).connect(container)
            c = self.client.containers.get(container)
        except docker.errors.APIError as e:
            raise ProviderError(f"cannot connect {container} to {network}: {e.explanation}"
                                ) from e
        ip = info(c).ips.get(network)
        if not ip:
            raise ProviderError(f"{container} got no address on {network}")
        return ip

    def network_subnet(self, name: str) -> str:
        """The IPv4 subnet Docker gave a network."""
        net = self.client.networks.get(name)
        configs = net.attrs.get("IPAM", {}).get("Config", []) or []
        return str(next(c["Subnet"] for c in configs if ":" not in c.get("Subnet", ":")))

    def create_volume(self, name: str, cluster: str, role: str) -> str:
        """A labelled named volume (shared between a node and its CNI containers)."""
        vol = self.client.volumes.create(name=name, labels=labels(cluster, role))
        return str(vol.name)

    def _kwargs(self, spec: ContainerSpec) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "name": spec.name,
            "labels": labels(spec.cluster, spec.role, spec.labels),
            "environment": spec.env,
            "cap_add": spec.cap_add or None,
            "security_opt": spec.security_opt or None,
            "sysctls": spec.sysctls or None,
            "devices": spec.devices or None,
            "init": spec.init or None,
            "volumes": {
                **{v: {"bind": p, "mode": "rw"} for v, p in spec.volumes.items()},
                **{h: {"bind": p, "mode": "ro"} for h, p in spec.binds.items()},
            } or None,
        }
        if spec.command is not None:
            kw["command"] = spec.command
        if spec.entrypoint is not None:
            kw["entrypoint"] = spec.entrypoint
        if spec.network_mode:
            kw["network_mode"] = spec.network_mode
        else:
            kw["network"] = spec.network
            kw["hostname"] = spec.hostname
            if spec.ip and spec.network:
                kw["networking_config"] = {
                    spec.network: self.client.api.create_endpoint_config(ipv4_address=spec.ip)}
            # Host port 0: any free port (found again with `published_port`).
            kw["ports"] = {p: (ip, hp or None) for p, (ip, hp) in spec.ports.items()} or None
        if spec.pid_mode:
            kw["pid_mode"] = spec.pid_mode
        if spec.restart:
            kw["restart_policy"] = {"Name": spec.restart}
        if spec.privileged:
            kw["privileged"] = True
        return kw

    def _create(self, spec: ContainerSpec) -> Container:
        return create_container(self.client, spec.image, **self._kwargs(spec))

    def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a detached container, then wait until `spec.wait` says it is ready."""
        try:
            c = self._create(spec)
            c.start()
            c.reload()
        except docker.errors.ImageNotFound as e:
            raise UserError(f"image {spec.image} is missing: run `python -m testbed images "
                            "build`") from e
        except docker.errors.APIError as e:
            raise ProviderError(f"cannot start {spec.name}: {e.explanation}") from e
        started = info(c)
        if spec.wait is not None:
            spec.wait.wait(self, started)
        return started

    def run_once(self, spec: ContainerSpec, timeout: float = 60) -> ExecResult:
        """Run a one-shot container to completion (an init container), then remove it; its
        output comes back only when it failed."""
        try:
            c = self._create(spec)
        except docker.errors.APIError as e:
            raise ProviderError(f"cannot create {spec.name}: {e.explanation}") from e
        try:
            c.start()
            code = int(c.wait(timeout=timeout).get("StatusCode", 1))
            if code == 0:  # what a successful init container printed is not kept
                return ExecResult(code, "", "")
            out = c.logs(stdout=True, stderr=False).decode(errors="replace")
            err = c.logs(stdout=False, stderr=True).decode(errors="replace")
            return ExecResult(code, out, err)
        except docker.errors.APIError as e:
            raise ProviderError(f"cannot start {spec.name}: {e.explanation}") from e
        finally:
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)

    def exec(self, container: str, argv: list[str], env: dict[str, str] | None = None,
             user: str = "") -> ExecResult:
        """Run argv inside a running container and collect its output."""
        api = self.client.api  # by name: no inspect of the container first
        try:
            exec_id = api.exec_create(container, argv, environment=env, user=user)["Id"]
            out, err = api.exec_start(exec_id, demux=True)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except docker.errors.NotFound as e:
            raise ProviderError(f"container {container} is gone") from e
        except docker.errors.APIError as e:
            raise ProviderError(f"exec in {container} failed: {e.explanation}") from e
        return ExecResult(int(code if code is not None else 1), text(out), text(err))

    def spawn(self, container: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start argv inside a running container and return at once (a detached exec)."""
        try:
            self.client.containers.get(container).exec_run(argv, environment=env, detach=True)
        except docker.errors.APIError as e:
            raise ProviderError(f"exec in {container} failed: {e.explanation}") from e

    def get_files(self, container: str, path: str) -> dict[str, bytes]:
        """Copy a file or folder out of a container: relative name -> content."""
        try:
            stream, _ = self.client.containers.get(container).get_archive(path)
        except docker.errors.NotFound as e:
            raise ProviderError(f"{path} does not exist in {container}") from e
        buf = io.BytesIO(b"".join(stream))
        out: dict[str, bytes] = {}
        with tarfile.open(fileobj=buf) as tar:
            for member in tar.getmembers():
                fh = tar.extractfile(member) if member.isfile() else None
                if fh is not None:
                    out[member.name.split("/", 1)[-1] if "/" in member.name else member.name
                        ] = fh.read()
        return out

    def put_file(self, container: str, path: str, content: str | bytes, mode: int = 0o644
                 ) -> None:
        """Write one file into a container (its parent folder must exist)."""
        data = content.encode() if isinstance(content, str) else content
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            member = tarfile.TarInfo(name=posixpath.basename(path))
            member.size, member.mode, member.mtime = len(data), mode, int(time.time())
            tar.addfile(member, io.BytesIO(data))
        self.put_archive(container, posixpath.dirname(path), buf.getvalue())

    def put_archive(self, container: str, path: str, data: bytes) -> None:
        """Unpack a tar archive into a folder of a container."""
        try:
            ok = self.client.api.put_archive(container, path, data)
        except docker.errors.APIError as e:
            raise ProviderError(f"cannot write to {path} in {container}: {e.explanation}"
                                ) from e
        if not ok:
            raise ProviderError(f"cannot write to {path} in {container}")

    def read_file(self, container: str, path: str) -> str:
        """One file's text from a container (no exec: the engine copies it out)."""
        files = self.get_files(container, path)
        if len(files) != 1:
            raise ProviderError(f"{path} in {container} is not a single file")
        return next(iter(files.values())).decode(errors="replace")

    def published_port(self, container: str, port: str) -> int:
        """The host port (on 127.0.0.1) a container's `port` (e.g. "2379/tcp") is published on."""
        try:
            c = self.client.containers.get(container)
        except docker.errors.NotFound as e:
            raise ProviderError(f"container {container} is gone") from e
        bound = (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(port) or []
        if not bound:
            raise ProviderError(f"{container} does not publish {port}")
        return int(bound[0]["HostPort"])

    def stats(self, container: str, one_shot: bool = False) -> Usage:
        """CPU and memory of one container, from the engine's cgroup counters (`one_shot`:
        at once, without the engine's ~1 s CPU window: read cpu_s, not cpu_pct)."""
        try:
            s: Any = self.client.containers.get(container).stats(
                stream=False, **({"one_shot": True} if one_shot else {}))
        except docker.errors.APIError as e:
            raise ProviderError(f"no stats for {container}: {e.explanation}") from e
        return usage(s)

    def logs(self, container: str, tail: int = 50) -> str:
        """The last lines a container printed (attached to timeout errors)."""
        try:
            data = self.client.containers.get(container).logs(tail=tail)
        except docker.errors.NotFound:
            return "(container is gone)"
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    def restart(self, container: str) -> None:
        """Restart a container in place."""
        self.client.containers.get(container).restart(timeout=5)

    def stop(self, container: str) -> None:
        """Stop a container (kept, not removed)."""
        self.client.containers.get(container).stop(timeout=5)

    def start(self, container: str) -> None:
        """Start a stopped container."""
        self.client.containers.get(container).start()

    def containers(self, cluster: str | None = None, role: str | None = None
                   ) -> list[ContainerInfo]:
        """Containers carrying the testbed labels, optionally of one cluster and role."""
        flt = [f"{LABEL_CLUSTER}={cluster}" if cluster else LABEL_CLUSTER]
        if role:
            flt.append(f"{LABEL_ROLE}={role}")
        # Another cluster's teardown may remove a container between listing and inspecting.
        found = self.client.containers.list(all=True, filters={"label": flt},
                                            ignore_removed=True)
        return sorted((info(c) for c in found), key=lambda i: i.name)

    def networks(self, cluster: str) -> list[str]:
        """Names of the networks labelled with this cluster."""
        found = self.client.networks.list(filters={"label": f"{LABEL_CLUSTER}={cluster}"})
        return sorted(str(n.name) for n in found)

    def volumes(self, cluster: str, role: str | None = None) -> list[str]:
        """Names of the volumes labelled with this cluster (and role)."""
        flt = [f"{LABEL_CLUSTER}={cluster}", *([f"{LABEL_ROLE}={role}"] if role else [])]
        return sorted(str(v.name) for v in self.client.volumes.list(filters={"label": flt}))

    def clusters(self) -> list[str]:
        """Names of every cluster that has a container, network or volume left."""
        names = {c.labels.get(LABEL_CLUSTER, "") for c in self.containers()}
        for n in self.client.networks.list(filters={"label": LABEL_CLUSTER}):
            names.add(n.attrs.get("Labels", {}).get(LABEL_CLUSTER, ""))
        for v in self.client.volumes.list(filters={"label": LABEL_CLUSTER}):
            names.add((v.attrs.get("Labels") or {}).get(LABEL_CLUSTER, ""))
        return sorted(n for n in names if n)

    def delete_cluster(self, cluster: str) -> None:
        """Remove every container, network and volume labelled with this cluster."""
        flt: dict[str, str | list[str] | bool] = {"label": f"{LABEL_CLUSTER}={cluster}"}
        found = self.client.containers.list(all=True, filters=flt, ignore_removed=True)

        # One parallel pass: a forced removal needs no order, even for containers that share
        # a node's network namespace.
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(_remove, found))
        try:
            for net in self.client.networks.list(filters=flt):
                with contextlib.suppress(docker.errors.NotFound):
                    net.remove()
            # each node has volumes of its own: removed side by side, as the containers
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(_remove_volume, self.client.volumes.list(filters=flt)))
        except docker.errors.APIError as e:  # e.g. a container joined meanwhile: retry
            raise ProviderError(f"cannot remove everything of {cluster}: {e.explanation}"
                                ) from e


def _remove_volume(vol: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        vol.remove(force=True)


def _remove(c: Container) -> None:
    try:
        c.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if "already in progress" not in str(e):
            raise ProviderError(f"cannot remove {c.name}: {e.explanation}") from e
