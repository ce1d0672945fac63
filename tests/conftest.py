"""Shared fixtures: images built once per session, clusters shared by the tests that can share."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed import cni as cnis
from testbed import images
from testbed.cni.select import source_specs
from testbed.lifecycle.create import UpContext, up
from testbed.provider.docker import DockerProvider
from testbed.scenario import Scenario, load

RUN_ID = uuid.uuid4().hex[:6]


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
    """A cluster a test may use, and how to reach it."""

    name: str
    ctx: UpContext
    provider: DockerProvider


def start(provider: DockerProvider, tag: str, cni: str, nodes: int = 3,
          scenario: Scenario | None = None) -> Running:
    """Bring a cluster up through the same code path as `python -m testbed up`."""
    spec = (scenario or load(None)).model_copy(deep=True)
    spec.nodes = nodes
    spec.cni.build = "source"
    module, backend, _ = cnis.parse(cni)
    name = cluster_name(tag)
    return Running(name, up(provider, spec, name, module, backend), provider)


@pytest.fixture(scope="session")
def flannel_vxlan(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node flannel vxlan cluster shared by the tests that only read it."""
    running = start(provider, "vx", "flannel:vxlan")
    yield running
    provider.delete_cluster(running.name)


@pytest.fixture(scope="session")
def flannel_hostgw(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node flannel host-gw cluster."""
    running = start(provider, "hg", "flannel:host-gw")
    yield running
    provider.delete_cluster(running.name)


def calico_scenario() -> Scenario:
    """The default scenario with a pool Docker never hands out (its default address pools
    include 192.168.0.0/16 in /20s, which would overlap Calico's default pool)."""
    spec = load(None).model_copy(deep=True)
    spec.cni.pod_cidr = "10.48.0.0/16"
    return spec


@pytest.fixture(scope="session")
def calico_bgp(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node calico cluster routing pod blocks with BGP (BIRD), no encapsulation."""
    running = start(provider, "cb", "calico:bgp", scenario=calico_scenario())
    yield running
    provider.delete_cluster(running.name)


@pytest.fixture(scope="session")
def calico_vxlan(provider: DockerProvider, built: dict[str, str]) -> Iterator[Running]:
    """A 3-node calico cluster over felix's vxlan.calico."""
    running = start(provider, "cv", "calico:vxlan", scenario=calico_scenario())
    yield running
    provider.delete_cluster(running.name)


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
            for name in p.clusters():
                if name.endswith(RUN_ID):
                    p.delete_cluster(name)
            return
        except Exception:
            continue
