"""What a fault needs to know about a cluster: node names, addresses, pod CIDRs, its CNI."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from testbed import cni as cnis
from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.constants import LABEL_NODE
from testbed.errors import TestbedError
from testbed.provider.base import ContainerInfo, Provider

CLUSTER_IF = "eth0"  # the node's interface on `<cluster>-net` (flannel --iface, calico IP)


@dataclass(frozen=True)
class Facts:
    """One cluster as found from its labels, for fault injection."""

    provider: Provider
    cluster: str
    cni: cnis.Cni | None
    nodes: dict[int, ContainerInfo]
    nets: dict[int, list[str]] = field(default_factory=dict)  # pod networks, looked up early

    @classmethod
    def find(cls, provider: Provider, cluster: str) -> Facts:
        """Look the cluster up (a one-line error when it does not exist)."""
        found = model.find(provider, cluster)
        nodes = {int(n.name.rsplit("-", 1)[-1]): n for n in found.nodes}
        return cls(provider, cluster, cnis.REGISTRY.get(found.cni), nodes)

    def node(self, index: int) -> str:
        """`<cluster>-node-<index>`."""
        return model.node_name(self.cluster, index)

    def ip(self, index: int) -> str:
        """A node's address on the cluster network."""
        info = self.nodes[index]
        return info.ips.get(model.network_name(self.cluster)) or info.ip or ""

    def dependents(self, index: int) -> list[ContainerInfo]:
        """Containers sharing the node's network namespace (CNI daemons, the ingress)."""
        node = self.node(index)
        return [c for c in self.provider.containers(cluster=self.cluster)
                if c.labels.get(LABEL_NODE) == node and c.role != "node"]

    def cni_daemons(self, index: int) -> list[ContainerInfo]:
        """The node's long-running CNI containers (flanneld, calico-node, weave)."""
        return [c for c in self.dependents(index)
                if c.role == "cni" and "-install-" not in c.name]

    def warm(self) -> None:
        """Look every node's pod networks up now, so a partition later applies at once."""
        self.nets.clear()
        for i in self.nodes:
            self.nets[i] = self.pod_networks(i)

    def pod_networks(self, index: int) -> list[str]:
        """The node's pod CIDRs (flannel's lease, calico's blocks) and each pod's /32."""
        if index in self.nets:
            return self.nets[index]
        out: set[str] = set()
        node = self.node(index)
        if self.cni is not None:
            try:
                status = self.cni.node_status(self.provider, node)
            except TestbedError:
                status = {}
            for text in [*str(status.get("pod_cidr") or "").split(","),
                         *(status.get("blocks") or [])]:
                if text.strip():
                    out.add(str(ipaddress.ip_network(text.strip(), strict=False)))
        try:
            pods = NodeAgent(self.provider, node).pods()
        except TestbedError:
            pods = []
        for pod in pods:
            ip = str(pod.get("ip") or "").split("/")[0]
            if ip:
                out.add(f"{ip}/32")
        return sorted(out)
