"""The images testbed builds locally: the core roles, and each CNI's source-built images."""

from __future__ import annotations

from dataclasses import dataclass, field

from testbed.images.gobuild import GoSource

PYROUTE2 = "pyroute2==0.9.7"
# The node agent's etcd client (the v3 JSON gateway, which Debian's etcd 3.4 serves).
ETCD3GW = "etcd3gw==2.5.0"
# Locust runs inside client pods and the outside client (never in the orchestrator).
LOCUST = "locust==2.47.0"


@dataclass(frozen=True)
class ImageSpec:
    """One locally built image: a Dockerfile folder, repo sources, wheels and Go builds."""

    name: str
    role: str
    sources: tuple[str, ...] = ()
    wheels: tuple[str, ...] = ()
    cni: str | None = None
    # The upstream Go builds whose binaries (and module files) the image carries.
    go: tuple[GoSource, ...] = ()
    dockerfile_dir: str = field(default="")

    @property
    def folder(self) -> str:
        """The folder under images/ that holds the Dockerfile."""
        return self.dockerfile_dir or self.name

    @property
    def repository(self) -> str:
        """Local repository name (`testbed/<name>`): never an upstream name."""
        return f"testbed/{self.name}"


BASE = ImageSpec(name="base", role="base")
NODE = ImageSpec(
    name="node",
    role="node",
    sources=("testbed/__init__.py", "testbed/agent"),
    wheels=(PYROUTE2, LOCUST, ETCD3GW),
)
ETCD = ImageSpec(name="etcd", role="datastore")
INGRESS = ImageSpec(name="ingress", role="ingress")

CORE: tuple[ImageSpec, ...] = (NODE, ETCD, INGRESS)
ALL: tuple[ImageSpec, ...] = (BASE, *CORE)


def by_name(name: str) -> ImageSpec:
    """Look a core image spec up by its name."""
    for spec in ALL:
        if spec.name == name:
            return spec
    raise KeyError(name)
