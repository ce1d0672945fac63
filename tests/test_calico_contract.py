"""Calico without Docker: the specs the module renders, held against upstream's facts
(Calico v3.31.0: `calicoctl node run`, calico/node's and calico/cni's images, the CNI plugin's
install and netconf, libcalico-go's etcd key layout, kube-controllers' policy conversion)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testbed import cni as cnis
from testbed.cni import calico as calico_mod
from testbed.cni.base import ClusterRef, NodeRef
from testbed.errors import UserError
from testbed.provider.base import ExecResult

ETCD = "http://172.18.0.2:2379"
IMAGES = Path(__file__).parent.parent / "images"


def cluster(backend: str = "bgp", images: dict[str, str] | None = None,
            **options: Any) -> ClusterRef:
    nodes = tuple(NodeRef(name=f"tb-node-{i}", index=i, ip=f"172.18.0.{i + 2}",
                          volumes={v: f"tb-node-{i}-{v}" for v in calico_mod.Calico.node_volumes})
                  for i in (1, 2))
    return ClusterRef(name="tb", network="tb-net", backend=backend, etcd_endpoint=ETCD,
                      images=images or {"node": "img/node", "cni": "img/cni"}, nodes=nodes,
                      options=options)


@pytest.fixture
def mod() -> calico_mod.Calico:
    module, backend, version = cnis.parse("calico")
    assert backend == "bgp" and version == ""
    assert isinstance(module, calico_mod.Calico)
    return module


# --- the module --------------------------------------------------------------------------------

def test_registered_with_both_backends(mod: calico_mod.Calico) -> None:
    assert cnis.REGISTRY["calico"] is mod
    assert mod.backends == ("bgp", "vxlan")
    assert cnis.parse("calico:vxlan@v3.31.0")[1:] == ("vxlan", "v3.31.0")
    with pytest.raises(UserError):
        cnis.parse("calico:ipip")


def test_upstream_images_are_the_release_manifests_and_only_images_change_per_build(
        mod: calico_mod.Calico) -> None:
    # manifests/calico-etcd.yaml of v3.31.0: quay.io/calico/{cni,node}:v3.31.0
    assert mod.upstream_images("v3.31.0") == {"node": "quay.io/calico/node:v3.31.0",
                                              "cni": "quay.io/calico/cni:v3.31.0"}
    up = cluster(images=mod.upstream_images(mod.default_release))
    src = cluster(images={"node": "testbed/calico-node:x", "cni": "testbed/calico-cni:y"})
    for render in (mod.daemon_specs, mod.install_specs):
        a, b = render(up, up.nodes[0])[0], render(src, src.nodes[0])[0]
        assert a.image != b.image
        a.image = b.image
        assert a == b, "the orchestrator does not branch on the build"


def test_source_build_is_calicos_module_at_the_release_commit(mod: calico_mod.Calico) -> None:
    src = calico_mod.calico_source("v3.31.0")
    assert src.module == "github.com/projectcalico/calico" == mod.module
    # The root module has no /v3 suffix: v3.31.0 is its tag's commit as a pseudo-version.
    assert src.version.startswith("v0.0.0-20251021") and src.revision == "b1f3c43f8437"
    assert src.release == "v3.31.0" and not src.cgo
    # calico/node's and calico/cni's commands, at their paths in the repository.
    assert src.binaries == (("node/cmd/calico-node", "calico-node"),
                            ("cni-plugin/cmd/calico", "calico"),
                            ("cni-plugin/cmd/install", "install"))
    # lib.Makefile's LDFLAGS.
    assert "-X github.com/projectcalico/calico/pkg/buildinfo.Version={release}" in src.ldflags
    assert "-X github.com/projectcalico/calico/pkg/buildinfo.GitRevision=" in src.ldflags
    # go.mod replaces github.com/projectcalico/api and .../lib/std with ./api and ./lib/std.
    assert {m for m, _ in src.requires} == {"github.com/projectcalico/api",
                                            "github.com/projectcalico/calico/lib/std"}
    assert dict(src.files) == {"node/filesystem": "node-filesystem",
                               "confd/etc/calico/confd": "confd"}
    images = mod.source_images("v3.31.0", mod.module)
    assert {role: spec.name for role, spec in images.items()} == {"node": "calico-node",
                                                                  "cni": "calico-cni"}
    assert images["node"].go == images["cni"].go == (src,), "one build, two images"
    with pytest.raises(UserError, match=r"v3\.31\.0"):
        calico_mod.calico_source("v3.99.0")


def test_images_keep_upstreams_layout_where_the_module_looks(mod: calico_mod.Calico) -> None:
    """calico/node: /bin/calico-node, CMD start_runit; calico/cni: /opt/cni/bin/install as
    CMD (node/Dockerfile.amd64, cni-plugin/Dockerfile of v3.31.0)."""
    node = (IMAGES / "calico-node/Dockerfile").read_text()
    cni = (IMAGES / "calico-cni/Dockerfile").read_text()
    c = cluster()
    (daemon,) = mod.daemon_specs(c, c.nodes[0])
    (install,) = mod.install_specs(c, c.nodes[0])
    assert daemon.command == ["start_runit"] and daemon.entrypoint is None
    assert 'CMD ["start_runit"]' in node
    assert "COPY go/calico/calico-node /bin/calico-node\n" in node
    assert "ln -sf /usr/sbin/birdc /bin/birdcl" in node, "node_status runs birdcl"
    assert install.entrypoint == ["/opt/cni/bin/install"]
    assert 'CMD ["/opt/cni/bin/install"]' in cni
    assert "COPY go/calico/calico go/calico/install /opt/cni/bin/\n" in cni
    assert "cp /opt/cni/bin/calico /opt/cni/bin/calico-ipam" in cni, "the conflist's ipam type"


def test_calico_node_runs_like_calicoctl_node_run(mod: calico_mod.Calico) -> None:
    c = cluster("bgp")
    (spec,) = mod.daemon_specs(c, c.nodes[0])
    assert spec.image == "img/node"
    assert spec.command == ["start_runit"] and spec.entrypoint is None
    assert spec.network_mode == "container:tb-node-1"  # hostNetwork: the node's namespace
    env = spec.env
    # calicoctl node run's own variables
    assert env["NODENAME"] == "tb-node-1"
    assert env["CALICO_NETWORKING_BACKEND"] == "bird"
    assert env["CALICO_MANAGE_CNI"] == "false"
    assert env["ETCD_ENDPOINTS"] == ETCD
    assert env["IP"] == "autodetect"
    assert env["IP_AUTODETECTION_METHOD"] == "interface=eth0"
    # calico/node's start-up: the datastore and the default pool it creates
    assert env["DATASTORE_TYPE"] == "etcdv3"
    assert env["CALICO_IPV4POOL_CIDR"] == "192.168.0.0/16"
    assert env["CALICO_IPV4POOL_BLOCK_SIZE"] == "26"
    assert env["CALICO_IPV4POOL_IPIP"] == "Never"   # no ipip module in this kernel
    assert env["CALICO_IPV4POOL_VXLAN"] == "Never"
    assert env["CALICO_IPV4POOL_NAT_OUTGOING"] == "true"
    assert env["CALICO_DISABLE_FILE_LOGGING"] == "true"
    assert env["FELIX_DEFAULTENDPOINTTOHOSTACTION"] == "ACCEPT"
    assert env["FELIX_IPV6SUPPORT"] == "false"
    assert env["FELIX_HEALTHENABLED"] == "true"
    assert env["FELIX_IPTABLESBACKEND"] in ("Legacy", "NFT", "Auto")
    # felix/bpf/nat/connecttime.go: os.Getenv("FELIX_DebugSkipCTLBCleanup") == "true", an exact
    # name and value (not felix's case-insensitive config parsing).
    assert env["FELIX_DebugSkipCTLBCleanup"] == "true"
    assert "FELIX_VXLANVNI" not in env
    # calicoctl's mounts: /var/log/calico, /var/run/calico, /var/lib/calico (and /lib/modules)
    assert spec.volumes == {"tb-node-1-calico-run": "/var/run/calico",
                            "tb-node-1-calico-lib": "/var/lib/calico",
                            "tb-node-1-calico-log": "/var/log/calico"}
    assert {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"} <= set(spec.cap_add)
    assert spec.role == "cni" and spec.labels["io.testbed.node"] == "tb-node-1"


def test_vxlan_backend_env(mod: calico_mod.Calico) -> None:
    c = cluster("vxlan", pod_cidr="10.48.0.0/16", mtu=1400)
    env = mod.daemon_specs(c, c.nodes[1])[0].env
    assert env["CALICO_NETWORKING_BACKEND"] == "vxlan"
    assert env["CALICO_IPV4POOL_VXLAN"] == "Always"
    assert env["CALICO_IPV4POOL_IPIP"] == "Never"
    assert env["FELIX_VXLANVNI"] == "4096" and env["FELIX_VXLANPORT"] == "4789"
    assert env["FELIX_VXLANMTU"] == "1400"
    assert env["CALICO_IPV4POOL_CIDR"] == "10.48.0.0/16"
    assert env["NODENAME"] == "tb-node-2"


def test_lib_modules_bound_read_only_only_where_the_host_has_them(
        mod: calico_mod.Calico, monkeypatch: pytest.MonkeyPatch) -> None:
    c = cluster()
    monkeypatch.setattr(calico_mod, "host_has_modules", lambda: True)
    assert mod.daemon_specs(c, c.nodes[0])[0].binds == {"/lib/modules": "/lib/modules"}
    monkeypatch.setattr(calico_mod, "host_has_modules", lambda: False)
    assert mod.daemon_specs(c, c.nodes[0])[0].binds == {}


def test_node_shares_cni_and_calico_state_dirs(mod: calico_mod.Calico) -> None:
    # The plugin reads /var/lib/calico/nodename and /var/lib/calico/mtu (utils.MTUFilePath)
    # inside the node; calico/node writes the first, felix the second.
    assert mod.node_volumes["cni-bin"] == "/opt/cni/bin"
    assert mod.node_volumes["calico-lib"] == "/var/lib/calico"
    assert mod.node_volumes["calico-run"] == "/var/run/calico"
    assert set(mod.ready_files) == {"/var/lib/calico/nodename", "/var/lib/calico/mtu"}


def test_conflist_is_the_k8s_less_one(mod: calico_mod.Calico) -> None:
    c = cluster()
    conf = mod.conflist(c, c.nodes[0])
    # calico-etcd.yaml's cni_network_config minus its kubernetes/policy/log/TLS keys, with the
    # plugin's netconf fields (types.NetConf) for an etcd datastore without a kube API.
    assert conf["cniVersion"] == "0.3.1"
    assert conf["name"] == "k8s-pod-network"
    calico, portmap = conf["plugins"]
    assert calico == {"type": "calico", "datastore_type": "etcdv3", "etcd_endpoints": ETCD,
                      "nodename": "tb-node-1", "mtu": 0,  # 0: the plugin reads felix's mtu file
                      "ipam": {"type": "calico-ipam", "assign_ipv4": "true"}}
    assert portmap == {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
    assert mod.conflist(cluster(mtu=1400), c.nodes[0])["plugins"][0]["mtu"] == 1400
    assert mod.conflist_name.endswith(".conflist")


def test_install_container_is_calico_cni_install(mod: calico_mod.Calico) -> None:
    c = cluster()
    (spec,) = mod.install_specs(c, c.nodes[1])
    assert spec.image == "img/cni"
    assert spec.entrypoint == ["/opt/cni/bin/install"]
    # cni-plugin/pkg/install: envconfig SLEEP (default true), CNI_CONF_NAME,
    # CNI_NETWORK_CONFIG; KUBERNETES_NODE_NAME, DATASTORE_TYPE, ETCD_ENDPOINTS fill the template.
    assert spec.env["SLEEP"] == "false"
    assert spec.env["CNI_CONF_NAME"] == mod.conflist_name
    assert json.loads(spec.env["CNI_NETWORK_CONFIG"]) == mod.conflist(c, c.nodes[1])
    assert spec.env["KUBERNETES_NODE_NAME"] == "tb-node-2"
    assert spec.env["DATASTORE_TYPE"] == "etcdv3" and spec.env["ETCD_ENDPOINTS"] == ETCD
    # install.go writes into /host/opt/cni/bin and /host/etc/cni/net.d
    assert spec.volumes == {"tb-node-2-cni-bin": "/host/opt/cni/bin",
                            "tb-node-2-cni-net": "/host/etc/cni/net.d"}
    assert spec.network_mode == "none"


def test_profile_written_first_is_allow_all(mod: calico_mod.Calico) -> None:
    keys = mod.datastore_keys(cluster())
    (key, value), = keys.items()
    # libcalico-go: /calico/resources/v3/projectcalico.org/<plural>/<name>
    assert key == "/calico/resources/v3/projectcalico.org/profiles/k8s-pod-network"
    doc = json.loads(value)
    assert doc["kind"] == "Profile" and doc["apiVersion"] == "projectcalico.org/v3"
    assert doc["spec"]["ingress"] == [{"action": "Allow"}]
    assert doc["spec"]["egress"] == [{"action": "Allow"}]
    assert doc["spec"]["labelsToApply"] == {"k8s-pod-network": ""}
    assert mod.datastore_keys(cluster()) == keys, "the same profile on every up"


class FakeProvider:
    """A fake provider: canned exec answers (the real one needs Docker)."""

    def __init__(self, answers: dict[str, ExecResult]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, list[str]]] = []

    def exec(self, container: str, argv: list[str], env: dict[str, str] | None = None,
             user: str = "") -> ExecResult:
        self.calls.append((container, argv))
        return self.answers.get(argv[0], ExecResult(1, "", "no such thing"))


# `birdcl show protocols`: BIRD 1.6 (Debian's bird, and the 1.6-based fork calico/node ships;
# calicoctl's status.go sample) and BIRD 2 print the same columns.
BIRD_1_6 = """BIRD 1.6.8 ready.
name     proto    table    state  since       info
static1  Static   master   up     2016-11-21
kernel1  Kernel   master   up     2016-11-21
device1  Device   master   up     2016-11-21
direct1  Direct   master   up     2016-11-21
Mesh_172_18_0_4 BGP      master   up     2016-11-21  Established
Mesh_172_18_0_5 BGP      master   start  2016-11-21  Active        Socket: Connection refused
"""
BIRD_2 = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
static1    Static     master4    up     10:12:45.070
kernel1    Kernel     master4    up     10:12:38.340
Mesh_172_18_0_4 BGP        ---        up     10:12:38.732  Established
Mesh_172_18_0_5 BGP        ---        start  10:12:39.429  Active        Socket: Connection refused
"""


@pytest.mark.parametrize(("bird", "since"), [(BIRD_1_6, ("2016-11-21", "2016-11-21")),
                                             (BIRD_2, ("10:12:38.732", "10:12:39.429"))])
def test_node_status_reads_blocks_and_bgp(mod: calico_mod.Calico, bird: str,
                                          since: tuple[str, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # libcalico-go's affinity keys: /calico/ipam/v2/host/<host>/ipv4/block/172.29.82.0-26
    prefix = "/calico/ipam/v2/host/tb-node-1/ipv4/block/"
    reads: list[tuple[str, str, bool]] = []

    class FakeEtcd:
        def __init__(self, provider: object, cluster: str) -> None:
            self.cluster = cluster

        def range(self, key: str, keys_only: bool = False) -> tuple[list[tuple[str, bytes]], int]:
            reads.append((self.cluster, key, keys_only))
            return [(f"{prefix}192.168.3.64-26", b""), (f"{prefix}192.168.7.0-26", b"")], 7

    monkeypatch.setattr(calico_mod, "ClusterEtcd", FakeEtcd)
    fake = FakeProvider({"birdcl": ExecResult(0, bird, "")})
    status = mod.node_status(fake, "tb-node-1")  # type: ignore[arg-type]
    assert status["blocks"] == ["192.168.3.64/26", "192.168.7.0/26"]
    assert status["pod_cidr"] == "192.168.3.64/26, 192.168.7.0/26"
    # calicoctl node status: State = column 3, Since = column 4, BGPState = column 5, Info after
    assert status["bgp_peers"] == [
        {"name": "Mesh_172_18_0_4", "state": "Established", "proto_state": "up",
         "since": since[0], "info": "Established"},
        {"name": "Mesh_172_18_0_5", "state": "Active", "proto_state": "start",
         "since": since[1], "info": "Active Socket: Connection refused"}]
    assert "vxlan" not in status
    assert reads == [("tb", prefix, True)]
    # node/filesystem/etc/service/available/bird/run: bird -s /var/run/calico/bird.ctl
    assert ("tb-node-1-calico-node",
            ["birdcl", "-s", "/var/run/calico/bird.ctl", "show", "protocols"]) in fake.calls


def test_workload_endpoint_names_escape_dashes() -> None:
    # names.WorkloadEndpointIdentifiers, orchestrator "cni": <node>-cni-<containerID>-<endpoint>
    # with each segment's dashes doubled (escapeDashes).
    assert calico_mod.wep_name("tb-node-1", "abc123") == "tb--node--1-cni-abc123-eth0"
    assert calico_mod.wep_name("n", "a-b", "net1") == "n-cni-a--b-net1"


def test_network_policy_as_kube_controllers_writes_it(mod: calico_mod.Calico) -> None:
    from testbed.scenario import load

    scenario = load(None)
    (pol,) = scenario.network_policies
    keys = mod.policy_keys(scenario)
    (key, value), = keys.items()
    # names.K8sNetworkPolicyNamePrefix "knp.default.", namespaced resource key, order 1000
    assert key == ("/calico/resources/v3/projectcalico.org/networkpolicies/default/"
                   f"knp.default.{pol.name}")
    doc = json.loads(value)
    assert doc["kind"] == "NetworkPolicy" and doc["apiVersion"] == "projectcalico.org/v3"
    assert doc["metadata"] == {"name": f"knp.default.{pol.name}", "namespace": "default"}
    assert doc["spec"]["order"] == 1000 and doc["spec"]["types"] == ["Ingress"]
    assert doc["spec"]["selector"] == "app == 'guarded'"
    assert doc["spec"]["ingress"] == [{"action": "Allow", "protocol": "TCP",
                                       "destination": {"ports": [8080]},
                                       "source": {"selector": "role == 'client'"}}]


def test_readiness_is_calico_nodes_probe(mod: calico_mod.Calico) -> None:
    # calico.yaml's readinessProbe: calico-node -felix-ready -bird-ready (BIRD only where
    # rc.local enabled its service: /etc/service/enabled/bird)
    bgp = FakeProvider({"test": ExecResult(0, "", ""), "calico-node": ExecResult(0, "", "")})
    assert mod.ready(bgp, "tb-node-1")  # type: ignore[arg-type]
    assert bgp.calls == [
        ("tb-node-1-calico-node", ["test", "-e", "/etc/service/enabled/bird/run"]),
        ("tb-node-1-calico-node", ["calico-node", "-felix-ready", "-bird-ready"])]
    vxlan = FakeProvider({"calico-node": ExecResult(1, "", "not ready")})
    assert not mod.ready(vxlan, "tb-node-1")  # type: ignore[arg-type]
    assert vxlan.calls[-1][1] == ["calico-node", "-felix-ready"]  # no BIRD service enabled
