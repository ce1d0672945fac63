"""Flannel: flanneld per node with an etcd datastore, the flannel CNI plugin over bridge."""

from __future__ import annotations

import json
from typing import Any

from testbed.cni.base import ClusterRef, Cni, NodeRef
from testbed.constants import LABEL_NODE
from testbed.provider.base import ContainerSpec, Provider

ETCD_PREFIX = "/coreos.com/network"
DEFAULT_NETWORK = "10.244.0.0/16"
VXLAN_VNI = 1
VXLAN_PORT = 8472
HEALTHZ_PORT = 10256 - 1  # kube-proxy owns 10256; 10255 is free on every node


class Flannel(Cni):
    """Upstream's datastore mode: `flanneld --etcd-endpoints ...`, no kube-subnet-mgr."""

    name = "flannel"
    backends = ("vxlan", "host-gw")
    default_backend = "vxlan"
    upstream_images = {
        "daemon": "docker.io/flannel/flannel:v0.28.0",
        "cni-plugin": "docker.io/flannel/flannel-cni-plugin:v1.9.0-flannel1",
    }
    reference_images = {
        "daemon": "reference-flannel",
        "cni-plugin": "reference-flannel-cni-plugin",
    }
    node_volumes = {"cni-bin": "/opt/cni/bin", "flannel-run": "/run/flannel"}
    ready_files = ("/run/flannel/subnet.env",)
    conflist_name = "10-flannel.conflist"
    default_pod_cidr = DEFAULT_NETWORK

    def network_config(self, cluster: ClusterRef) -> dict[str, Any]:
        """The value of <prefix>/config, exactly as upstream's net-conf.json."""
        backend: dict[str, Any] = {"Type": cluster.backend}
        if cluster.backend == "vxlan":
            backend |= {"VNI": VXLAN_VNI, "Port": VXLAN_PORT}
        cfg: dict[str, Any] = {
            "Network": cluster.options.get("pod_cidr", DEFAULT_NETWORK),
            "SubnetLen": 24,
            "Backend": backend,
        }
        if cluster.options.get("mtu") and cluster.backend == "vxlan":
            backend["MTU"] = cluster.options["mtu"]
        return cfg

    def datastore_keys(self, cluster: ClusterRef) -> dict[str, str]:
        """flanneld reads its network config from etcd v3."""
        return {f"{ETCD_PREFIX}/config": json.dumps(self.network_config(cluster))}

    def install_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """The DaemonSet's install-cni-plugin init container: copy /flannel into the node."""
        return [ContainerSpec(
            name=f"{node.name}-install-flannel-cni",
            image=cluster.images["cni-plugin"],
            cluster=cluster.name, role="cni",
            labels={LABEL_NODE: node.name},
            entrypoint=["cp"], command=["-f", "/flannel", "/opt/cni/bin/flannel"],
            network_mode="none",
            volumes={node.volumes["cni-bin"]: "/opt/cni/bin"},
        )]

    def daemon_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """kube-flannel's container, with hostNetwork meaning the node's namespace."""
        return [ContainerSpec(
            name=f"{node.name}-flannel",
            image=cluster.images["daemon"],
            cluster=cluster.name, role="cni",
            labels={LABEL_NODE: node.name},
            entrypoint=["/opt/bin/flanneld"],
            command=[
                f"--etcd-endpoints={cluster.etcd_endpoint}",
                f"--etcd-prefix={ETCD_PREFIX}",
                "--iface=eth0",
                "--ip-masq",
                "--subnet-file=/run/flannel/subnet.env",
                "--healthz-ip=127.0.0.1",
                f"--healthz-port={HEALTHZ_PORT}",
            ],
            env={"POD_NAME": f"kube-flannel-{node.name}", "POD_NAMESPACE": "kube-flannel"},
            network_mode=f"container:{node.name}",
            volumes={node.volumes["flannel-run"]: "/run/flannel"},
            cap_add=["NET_ADMIN", "NET_RAW"],
            restart="on-failure",
        )]

    def conflist(self, cluster: ClusterRef, node: NodeRef) -> dict[str, Any]:
        """kube-flannel-cfg's cni-conf.json."""
        return {
            "name": "cbr0",
            "cniVersion": "0.3.1",
            "plugins": [
                {"type": "flannel",
                 "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def node_status(self, provider: Provider, node: str) -> dict[str, Any]:
        """The node's lease as flanneld wrote it to subnet.env."""
        res = provider.exec(node, ["cat", "/run/flannel/subnet.env"])
        env = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        return {"pod_cidr": env.get("FLANNEL_SUBNET", ""), "mtu": env.get("FLANNEL_MTU", ""),
                "ip_masq": env.get("FLANNEL_IPMASQ", "")}

    def pod_cidr_note(self) -> str:
        """Flannel leases one /24 per node from the network in etcd."""
        return "one /24 lease per node from /coreos.com/network/config"
