"""Flannel's wiring against kube-flannel.yml: the container specs and CNI config `up` renders."""

from __future__ import annotations

import json

from testbed.cni import ClusterRef, NodeRef, parse
from testbed.cni.flannel import Flannel

UPSTREAM_DAEMON = "docker.io/flannel/flannel:"
UPSTREAM_PLUGIN = "docker.io/flannel/flannel-cni-plugin:"


def _cluster(backend: str, images: dict[str, str] | None = None) -> tuple[ClusterRef, NodeRef]:
    node = NodeRef("c-node-2", 2, "172.30.0.4",
                   {"cni-bin": "c-node-2-cni-bin", "flannel-run": "c-node-2-flannel-run"})
    imgs = images or dict(Flannel().upstream_images(Flannel.default_release))
    return ClusterRef("c", "c-net", backend, "http://172.30.0.2:2379", imgs, (node,)), node


def test_upstream_images_are_the_published_ones_and_only_images_change_per_build() -> None:
    published = Flannel().upstream_images(Flannel.default_release)
    assert published["daemon"].startswith(UPSTREAM_DAEMON + "v0.28.")
    assert published["cni-plugin"].startswith(UPSTREAM_PLUGIN + "v1.9.")
    up_c, node = _cluster("vxlan")
    src_c, _ = _cluster("vxlan", {"daemon": "testbed/flannel:x",
                                  "cni-plugin": "testbed/flannel-cni-plugin:y"})
    a, b = Flannel().daemon_specs(up_c, node)[0], Flannel().daemon_specs(src_c, node)[0]
    assert a.image != b.image
    a.image = b.image
    assert a == b, "the orchestrator does not branch on the build"


def test_flanneld_runs_as_kube_flannel_does_in_etcd_mode() -> None:
    cluster, node = _cluster("vxlan")
    (spec,) = Flannel().daemon_specs(cluster, node)
    assert spec.entrypoint == ["/opt/bin/flanneld"]
    args = spec.command or []
    assert "--etcd-endpoints=http://172.30.0.2:2379" in args
    assert "--etcd-prefix=/coreos.com/network" in args
    assert "--ip-masq" in args and "--iface=eth0" in args
    assert "--subnet-file=/run/flannel/subnet.env" in args
    assert not any(a.startswith("--kube-subnet-mgr") for a in args), "no kube API here"
    assert spec.network_mode == "container:c-node-2", "hostNetwork = the node's namespace"
    assert spec.volumes == {"c-node-2-flannel-run": "/run/flannel"}
    assert set(spec.cap_add) == {"NET_ADMIN", "NET_RAW"}, "the DaemonSet's capabilities"
    assert spec.role == "cni"


def test_install_cni_plugin_copies_flannel_into_the_nodes_cni_bin() -> None:
    cluster, node = _cluster("vxlan")
    (spec,) = Flannel().install_specs(cluster, node)
    assert spec.image == Flannel().upstream_images(Flannel.default_release)["cni-plugin"]
    assert [*(spec.entrypoint or []), *(spec.command or [])] == [
        "cp", "-f", "/flannel", "/opt/cni/bin/flannel"]
    assert spec.volumes == {"c-node-2-cni-bin": "/opt/cni/bin"}


def test_network_config_and_conflist_match_kube_flannel_cfg() -> None:
    cluster, node = _cluster("vxlan")
    keys = Flannel().datastore_keys(cluster)
    cfg = json.loads(keys["/coreos.com/network/config"])
    assert cfg["Network"] == "10.244.0.0/16" and cfg["SubnetLen"] == 24
    assert cfg["Backend"] == {"Type": "vxlan", "VNI": 1, "Port": 8472}
    hostgw, _ = _cluster("host-gw")
    assert json.loads(Flannel().datastore_keys(hostgw)["/coreos.com/network/config"]
                      )["Backend"] == {"Type": "host-gw"}
    conf = Flannel().conflist(cluster, node)
    assert conf == {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    assert Flannel.conflist_name == "10-flannel.conflist"


def test_source_build_is_flanneld_from_its_module_as_the_makefile_builds_it() -> None:
    from testbed.cni.flannel import flanneld_source

    src = flanneld_source("v0.28.10")
    assert (src.module, src.version, src.cgo) == ("github.com/flannel-io/flannel", "v0.28.10",
                                                  True)
    assert "-X github.com/flannel-io/flannel/pkg/version.Version={release}" in src.ldflags
    images = Flannel().source_images("v0.28.4", Flannel.module)
    assert images["daemon"].go[0].version == "v0.28.4", "the release picks the module version"


def test_backends_are_the_two_this_kernel_supports() -> None:
    assert parse("flannel")[1] == "vxlan"
    assert parse("flannel:host-gw")[1] == "host-gw"
    assert Flannel.backends == ("vxlan", "host-gw")
