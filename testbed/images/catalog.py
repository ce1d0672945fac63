"""The images testbed builds locally: what each is made of and what it stands in for."""

from __future__ import annotations

from dataclasses import dataclass, field

PYROUTE2 = "pyroute2==0.9.7"
# Each reference image takes only its own CNI's sources, so editing one CNI rebuilds no other.
REF_COMMON = ("testbed/__init__.py", "testbed/reference/__init__.py", "testbed/reference/etcdv3.py")
# Locust runs inside client pods and the outside client (never in the orchestrator).
LOCUST = "locust==2.47.0"


@dataclass(frozen=True)
class ImageSpec:
    """One locally built image: a Dockerfile folder plus repo sources and host-fetched wheels."""

    name: str
    role: str
    sources: tuple[str, ...] = ()
    wheels: tuple[str, ...] = ()
    cni: str | None = None
    stands_in_for: str | None = None
    dockerfile_dir: str = field(default="")

    @property
    def folder(self) -> str:
        """The folder under images/ that holds the Dockerfile."""
        return self.dockerfile_dir or self.name

    @property
    def repository(self) -> str:
        """Local repository name; reference builds never borrow an upstream name."""
        return f"testbed/{self.name}"


BASE = ImageSpec(name="base", role="base")
NODE = ImageSpec(
    name="node",
    role="node",
    # The agent's daemon talks to etcd through the reference etcd v3 gateway client.
    sources=("testbed/__init__.py", "testbed/agent", "testbed/reference/__init__.py",
             "testbed/reference/etcdv3.py"),
    wheels=(PYROUTE2, LOCUST),
)
ETCD = ImageSpec(name="etcd", role="datastore")
INGRESS = ImageSpec(name="ingress", role="ingress")
FLANNEL = ImageSpec(
    name="reference-flannel",
    role="cni",
    dockerfile_dir="flannel",
    sources=(*REF_COMMON, "testbed/reference/flannel"),
    wheels=(PYROUTE2,),
    cni="flannel",
    stands_in_for="docker.io/flannel/flannel",
)
FLANNEL_CNI_PLUGIN = ImageSpec(
    name="reference-flannel-cni-plugin",
    role="cni",
    dockerfile_dir="flannel-cni-plugin",
    sources=("testbed/reference/flannel/cni_plugin.py",),
    cni="flannel",
    stands_in_for="docker.io/flannel/flannel-cni-plugin",
)

CALICO_NODE = ImageSpec(
    name="reference-calico-node",
    role="cni",
    dockerfile_dir="calico-node",
    sources=(*REF_COMMON, "testbed/reference/calico"),
    wheels=(PYROUTE2,),
    cni="calico",
    stands_in_for="quay.io/calico/node",
)
CALICO_CNI = ImageSpec(
    name="reference-calico-cni",
    role="cni",
    dockerfile_dir="calico-cni",
    sources=(*REF_COMMON, "testbed/reference/calico"),
    cni="calico",
    stands_in_for="quay.io/calico/cni",
)
WEAVE = ImageSpec(
    name="reference-weave",
    role="cni",
    dockerfile_dir="weave",
    sources=(*REF_COMMON, "testbed/reference/weave"),
    wheels=(PYROUTE2,),
    cni="weave",
    stands_in_for="docker.io/weaveworks/weave",
)

CORE: tuple[ImageSpec, ...] = (NODE, ETCD, INGRESS)
REFERENCE: tuple[ImageSpec, ...] = (FLANNEL, FLANNEL_CNI_PLUGIN, CALICO_NODE, CALICO_CNI, WEAVE)
ALL: tuple[ImageSpec, ...] = (BASE, *CORE, *REFERENCE)


def by_name(name: str) -> ImageSpec:
    """Look an image spec up by its name."""
    for spec in ALL:
        if spec.name == name:
            return spec
    raise KeyError(name)


def for_cni(cni: str | None) -> tuple[ImageSpec, ...]:
    """The core images plus the reference images of one CNI (all CNIs when None)."""
    refs = tuple(s for s in REFERENCE if cni is None or s.cni == cni)
    return (*CORE, *refs)
