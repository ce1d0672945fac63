"""One module per CNI; this registry maps `NAME[:BACKEND]` to them."""

from __future__ import annotations

import re

from testbed.cni.base import ClusterRef, Cni, NodeRef
from testbed.cni.calico import Calico
from testbed.cni.flannel import Flannel
from testbed.cni.weave import Weave
from testbed.constants import RELEASE_PATTERN
from testbed.errors import UserError

REGISTRY: dict[str, Cni] = {c.name: c for c in (Flannel(), Calico(), Weave())}


def valid_names() -> str:
    """Every accepted `NAME[:BACKEND]`, for error messages."""
    return ", ".join(f"{c.name}[:{'|'.join(c.backends)}][@VERSION]" for c in REGISTRY.values())


VERSION = re.compile(RELEASE_PATTERN)


def check_version(version: str) -> str:
    """A release name (`v0.28.10`): a semantic version with its leading `v`."""
    if not VERSION.match(version):
        raise UserError(f"version {version!r} is not a release name: use vMAJOR.MINOR.PATCH, "
                        "e.g. calico@v3.31.0")
    return version


def parse(value: str) -> tuple[Cni, str, str]:
    """`flannel`, `flannel:host-gw`, `calico:vxlan@v3.31.0` -> (module, backend, version);
    version "" means the module's default release. A clear error otherwise."""
    value, at, version = value.strip().partition("@")
    if at:
        check_version(version)
    name, _, backend = value.partition(":")
    cni = REGISTRY.get(name.lower())
    if cni is None:
        raise UserError(f"unknown CNI {name!r}: choose one of {valid_names()}")
    backend = backend.lower() or cni.default_backend
    if backend not in cni.backends:
        raise UserError(f"unknown backend {backend!r} for {cni.name}: choose one of "
                        f"{', '.join(cni.backends)}")
    return cni, backend, version


__all__ = ["REGISTRY", "ClusterRef", "Cni", "NodeRef", "check_version", "parse", "valid_names"]
