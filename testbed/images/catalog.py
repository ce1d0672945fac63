"""The images testbed builds locally: the core roles, and each CNI's source-built images."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from testbed.images.gobuild import GoSource
from testbed.paths import NODE_PACKAGES, PYPROJECT


def node_requirements() -> tuple[str, ...]:
    """The node agent's own dependencies: pyproject's `node` extra, pinned, wheels in the image."""
    with PYPROJECT.open("rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    return tuple(str(r) for r in extras["node"])


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


# vegeta, the open-loop constant-rate HTTP generator of the load sweeps (testbed/load/openloop.py),
# built from its upstream module through the Go module proxy into the node image.
VEGETA = GoSource(
    name="vegeta", module="github.com/tsenart/vegeta/v12", version="v12.13.0",
    release="v12.13.0", binaries=(("", "vegeta"),),
    ldflags="-s -w -X main.Version={release}")

BASE = ImageSpec(name="base", role="base")
NODE = ImageSpec(
    name="node",
    role="node",
    sources=NODE_PACKAGES,
    wheels=node_requirements(),
    go=(VEGETA,),
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
