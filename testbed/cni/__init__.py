"""One module per CNI; this registry maps `NAME[:BACKEND]` to them."""

from __future__ import annotations

from testbed.cni.base import ClusterRef, Cni, NodeRef
from testbed.cni.calico import Calico
from testbed.cni.flannel import Flannel
from testbed.cni.weave import Weave
from testbed.errors import UserError

REGISTRY: dict[str, Cni] = {c.name: c for c in (Flannel(), Calico(), Weave())}


def valid_names() -> str:
    """Every accepted `NAME[:BACKEND]`, for error messages."""
    return ", ".join(f"{c.name}[:{'|'.join(c.backends)}]" for c in REGISTRY.values())


def parse(value: str) -> tuple[Cni, str]:
    """`flannel`, `flannel:host-gw` -> (module, backend); a clear error otherwise."""
    name, _, backend = value.strip().partition(":")
    cni = REGISTRY.get(name.lower())
    if cni is None:
        raise UserError(f"unknown CNI {name!r}: choose one of {valid_names()}")
    backend = backend.lower() or cni.default_backend
    if backend not in cni.backends:
        raise UserError(f"unknown backend {backend!r} for {cni.name}: choose one of "
                        f"{', '.join(cni.backends)}")
    return cni, backend


__all__ = ["REGISTRY", "ClusterRef", "Cni", "NodeRef", "parse", "valid_names"]
