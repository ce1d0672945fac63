"""What a CNI module describes: its daemon containers, install steps, datastore keys, conflist."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testbed.provider.base import ContainerSpec, Provider

if TYPE_CHECKING:
    from testbed.images.catalog import ImageSpec
    from testbed.scenario import Scenario


@dataclass(frozen=True)
class NodeRef:
    """One node as a CNI module sees it."""

    name: str
    index: int
    ip: str
    volumes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterRef:
    """The cluster-wide facts a CNI module needs to render its specs."""

    name: str
    network: str
    backend: str
    etcd_endpoint: str
    images: dict[str, str]
    nodes: tuple[NodeRef, ...]
    options: dict[str, Any] = field(default_factory=dict)


class Cni(ABC):
    """A CNI as the testbed runs it: upstream's wiring, whichever build fills the images."""

    name: str
    backends: tuple[str, ...]
    default_backend: str
    # backend -> the datapath in one line: why its figures look the way they do (reports).
    datapaths: dict[str, str] = {}
    # The upstream Go module the daemons are built from, and the release used by default.
    module: str
    default_release: str
    # Logical per-node volume name -> mount path inside the node container.
    node_volumes: dict[str, str] = {"cni-bin": "/opt/cni/bin"}
    # Files in the node that exist once the CNI daemon is ready.
    ready_files: tuple[str, ...] = ()
    # Whether `ready` checks more than `ready_files` (e.g. the daemon's readiness probe).
    has_ready_check: bool = False
    conflist_name: str = "10-cni.conflist"
    # Whether the CNI enforces Kubernetes NetworkPolicy (Calico's felix does; Flannel does not).
    enforces_policy: bool = False
    # The pod network when the scenario gives no podCIDR (kube-proxy's --cluster-cidr);
    # "" leaves out the masquerade rule for off-cluster sources.
    default_pod_cidr: str = ""

    @abstractmethod
    def upstream_images(self, release: str) -> dict[str, str]:
        """Image roles -> the published upstream images of a release."""

    @abstractmethod
    def source_images(self, release: str, module: str) -> dict[str, ImageSpec]:
        """Image roles -> the images built here from `module` at `release` (Go sources)."""

    def preflight(self, provider: Provider, cluster: str, node_image: str) -> None:
        """Refuse, before any node starts, what this CNI cannot run on this engine's kernel."""
        return None

    def datastore_keys(self, cluster: ClusterRef) -> dict[str, str]:
        """etcd keys to write before any daemon starts."""
        return {}

    def install_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """One-shot containers that install plugins into the node (DaemonSet init containers)."""
        return []

    @abstractmethod
    def daemon_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """The long-running CNI containers of one node, sharing its network namespace."""

    @abstractmethod
    def conflist(self, cluster: ClusterRef, node: NodeRef) -> dict[str, Any]:
        """The CNI network configuration list written to the node's /etc/cni/net.d."""

    def apply_policies(self, provider: Provider, cluster: str, scenario: Scenario) -> int:
        """Hand the scenario's NetworkPolicies to the CNI's policy engine (if it has one)."""
        return 0

    def ready(self, provider: Provider, node: str) -> bool:
        """A daemon-specific readiness check beyond `ready_files` (e.g. an HTTP status)."""
        return True

    def node_status(self, provider: Provider, node: str) -> dict[str, Any]:
        """CNI facts of one node for `status` (pod CIDR, peers, ...), read from the node."""
        return {}

    def pod_cidr_note(self) -> str:
        """How this CNI hands out pod addresses, for status output."""
        return ""
