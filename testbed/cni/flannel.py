"""Flannel: flanneld per node with an etcd datastore, the flannel CNI plugin over bridge."""

from __future__ import annotations

import json
from typing import Any

from testbed.cni.base import ClusterRef, Cni, NodeRef
from testbed.constants import LABEL_NODE
from testbed.errors import ProviderError
from testbed.images.catalog import ImageSpec
from testbed.images.gobuild import GoSource
from testbed.networks import POD_NETWORKS
from testbed.provider.base import ContainerSpec, Provider

ETCD_PREFIX = "/coreos.com/network"
SUBNET_ENV = "/run/flannel/subnet.env"  # flanneld --subnet-file: the node's lease
DEFAULT_NETWORK = POD_NETWORKS["flannel"][0]
VXLAN_VNI = 1
VXLAN_PORT = 8472
HEALTHZ_PORT = 10256 - 1  # kube-proxy owns 10256; 10255 is free on every node

MODULE = "github.com/flannel-io/flannel"
DEFAULT_RELEASE = "v0.28.10"
# The flannel CNI plugin's own module (github.com/flannel-io/cni-plugin) is not served by the
# module proxy here at any version; its code came from containernetworking/plugins'
# plugins/meta/flannel, whose last release there (v0.9.1) is what we build.
PLUGIN_MODULE = "github.com/containernetworking/plugins"
PLUGIN_RELEASE = "v0.9.1"
TENCENT = "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud"
# flanneld imports its tencentvpc backend unconditionally; the proxy here serves neither the
# vpc nor the common SDK version flannel pins, so the nearest served ones stand in (the
# backend is never used by vxlan or host-gw).
PINS = (
    (f"{TENCENT}/vpc", "v1.3.75", "pinned version not served by the module proxy"),
    (f"{TENCENT}/common", "v1.3.190", "pinned version not served by the module proxy"),
)


def flanneld_source(release: str, module: str = MODULE) -> GoSource:
    """flanneld as upstream's Makefile builds it: cgo on amd64 (udp backend), version ldflag."""
    return GoSource(
        name="flanneld", module=module, version=release, release=release,
        binaries=(("", "flanneld"),), cgo=True,
        ldflags=f"-s -w -X {module}/pkg/version.Version={{release}}", pins=PINS,
    )


def plugin_source() -> GoSource:
    """The `flannel` CNI plugin (delegates to bridge + host-local), no cgo."""
    return GoSource(
        name="flannel-cni-plugin", module=PLUGIN_MODULE, version=PLUGIN_RELEASE,
        release=PLUGIN_RELEASE, binaries=(("plugins/meta/flannel", "flannel"),),
        ldflags="-s -w",
    )


class Flannel(Cni):
    """Upstream's datastore mode: `flanneld --etcd-endpoints ...`, no kube-subnet-mgr."""

    name = "flannel"
    backends = ("vxlan", "host-gw")
    default_backend = "vxlan"
    datapaths = {"vxlan": "VXLAN encapsulation in the kernel (50 B overhead), no policy",
                 "host-gw": "routed, no encapsulation (host routes per node), no policy"}
    module = MODULE
    default_release = DEFAULT_RELEASE
    node_volumes = {"cni-bin": "/opt/cni/bin", "flannel-run": "/run/flannel"}
    ready_files = (SUBNET_ENV,)
    conflist_name = "10-flannel.conflist"
    default_pod_cidr = DEFAULT_NETWORK

    def upstream_images(self, release: str) -> dict[str, str]:
        """The published images of this release (kube-flannel.yml's)."""
        return {"daemon": f"docker.io/flannel/flannel:{release}",
                "cni-plugin": "docker.io/flannel/flannel-cni-plugin:v1.9.1-flannel1"}

    def source_images(self, release: str, module: str) -> dict[str, ImageSpec]:
        """flanneld and the flannel plugin built here, in upstream's image layout."""
        return {
            "daemon": ImageSpec(name="flannel", role="cni", cni=self.name,
                                go=(flanneld_source(release, module),)),
            "cni-plugin": ImageSpec(name="flannel-cni-plugin", role="cni", cni=self.name,
                                    go=(plugin_source(),)),
        }

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
        try:
            text = provider.read_file(node, SUBNET_ENV)
        except ProviderError:
            text = ""  # no lease yet
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return {"pod_cidr": env.get("FLANNEL_SUBNET", ""), "mtu": env.get("FLANNEL_MTU", ""),
                "ip_masq": env.get("FLANNEL_IPMASQ", "")}

    def pod_cidr_note(self) -> str:
        """Flannel leases one /24 per node from the network in etcd."""
        return "one /24 lease per node from /coreos.com/network/config"
