"""Shared fixtures: images built once per session, clusters shared by the tests that can share."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import pytest

from testbed import cni as cnis
from testbed import images
from testbed.cluster.handle import Cluster, select, teardown
from testbed.cni.select import source_specs
from testbed.constants import LABEL_CLUSTER
from testbed.lifecycle.context import UpContext
from testbed.provider.docker import DockerProvider
from testbed.scenario import Scenario, load

RUN_ID = uuid.uuid4().hex[:6]


def leftovers(provider: DockerProvider, name: str) -> list[str]:
    """Every container, network and volume labelled with the cluster, straight from Docker."""
    flt = {"label": f"{LABEL_CLUSTER}={name}"}
    c = provider.client
    return ([f"container {x.name}" for x in c.containers.list(all=True, filters=flt)]
            + [f"network {x.name}" for x in c.networks.list(filters=flt)]
            + [f"volume {x.name}" for x in c.volumes.list(filters=flt)])


def cluster_name(tag: str) -> str:
    """A unique, recognisable name for a test cluster."""
    return f"tbt-{tag}-{RUN_ID}"


def run_cli(*args: str, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `python -m testbed ...` as a user would."""
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def provider() -> DockerProvider:
    """A real Docker provider (tests that need Docker are marked `docker`)."""
    return DockerProvider()


@pytest.fixture(scope="session")
def built(provider: DockerProvider) -> dict[str, str]:
    """The core images and Flannel, Weave and Calico built from their upstream Go modules,
    once for the whole session (`.ci/run` builds them first; this is then a cache hit)."""
    return images.ensure(provider.images, source_specs())


@dataclass
class Running:
    """A cluster a test may use, and how to reach it; leaving its block removes it through
    the cluster handle (the one cleanup path)."""

    name: str
    ctx: UpContext
    provider: DockerProvider
    cluster: Cluster

    def down(self) -> None:
        """Remove every container, network and volume the cluster has left."""
        self.cluster.down()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()


def start(provider: DockerProvider, tag: str, cni: str, nodes: int = 3,
          scenario: Scenario | None = None) -> Running:
    """Bring a cluster up through the same code path as `python -m testbed up`."""
    spec = (scenario or load(None)).model_copy(deep=True)
    spec.nodes = nodes
    spec.cni.build = "source"
    module, backend, _ = cnis.parse(cni)
    name = cluster_name(tag)
    cluster = Cluster.create(provider, spec, name, module, backend)
    assert cluster.ctx is not None
    return Running(name, cluster.ctx, provider, cluster)


@pytest.fixture(scope="session")
def flannel_vxlan(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node flannel vxlan cluster shared by the tests that only read it."""
    with start(provider, "vx", "flannel:vxlan") as running:
        yield running


@pytest.fixture(scope="session")
def flannel_hostgw(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node flannel host-gw cluster."""
    with start(provider, "hg", "flannel:host-gw") as running:
        yield running


def calico_scenario() -> Scenario:
    """The default scenario with a pool Docker never hands out (its default address pools
    include 192.168.0.0/16 in /20s, which would overlap Calico's default pool)."""
    spec = load(None).model_copy(deep=True)
    spec.cni.pod_cidr = "10.48.0.0/16"
    return spec


@pytest.fixture(scope="session")
def calico_bgp(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node calico cluster routing pod blocks with BGP (BIRD), no encapsulation."""
    with start(provider, "cb", "calico:bgp", scenario=calico_scenario()) as running:
        yield running


@pytest.fixture(scope="session")
def calico_vxlan(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node calico cluster over felix's vxlan.calico."""
    with start(provider, "cv", "calico:vxlan", scenario=calico_scenario()) as running:
        yield running


@pytest.fixture(scope="session", autouse=True)
def _reap() -> Iterator[None]:
    """Whatever a failed test left, remove this session's clusters at the end."""
    yield
    try:
        p = DockerProvider()
    except Exception:
        return
    for _ in range(3):  # other sessions' containers may vanish while we list
        try:
            teardown(p, [n for n in select(p, None, True, "") if n.endswith(RUN_ID)])
            return
        except Exception:
            continue
