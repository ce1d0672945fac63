"""Calico without Docker: the specs the module renders, held against upstream's facts
(UPSTREAM.md, calicoctl node run, calico/cni's install), and the reference build's pure logic
(libcalico-go key layout, IPAM block math, BIRD config, felix rules)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest

from testbed import cni as cnis
from testbed.cni import calico as calico_mod
from testbed.cni.base import ClusterRef, NodeRef
from testbed.provider.base import ExecResult
from testbed.reference.calico import cni as plugin
from testbed.reference.calico import confd, ipam, model, rules, selector
from testbed.reference.etcdv3 import KeyValue, b64, unb64

ETCD = "http://172.18.0.2:2379"


def cluster(backend: str = "bgp", **options: Any) -> ClusterRef:
    nodes = tuple(NodeRef(name=f"tb-node-{i}", index=i, ip=f"172.18.0.{i + 2}",
                          volumes={v: f"tb-node-{i}-{v}" for v in calico_mod.Calico.node_volumes})
                  for i in (1, 2))
    return ClusterRef(name="tb", network="tb-net", backend=backend, etcd_endpoint=ETCD,
                      images={"node": "img/node", "cni": "img/cni"}, nodes=nodes,
                      options=options)


@pytest.fixture
def mod() -> calico_mod.Calico:
    module, backend = cnis.parse("calico")
    assert backend == "bgp"
    assert isinstance(module, calico_mod.Calico)
    return module


# --- the module --------------------------------------------------------------------------------

def test_registered_with_both_backends(mod: calico_mod.Calico) -> None:
    assert cnis.REGISTRY["calico"] is mod
    assert mod.backends == ("bgp", "vxlan")
    assert cnis.parse("calico:vxlan")[1] == "vxlan"


def test_images_are_calico_node_and_cni_v3_31(mod: calico_mod.Calico) -> None:
    assert mod.upstream_images["node"].startswith("quay.io/calico/node:v3.31.")
    assert mod.upstream_images["cni"].startswith("quay.io/calico/cni:v3.31.")
    assert mod.reference_images == {"node": "reference-calico-node",
                                    "cni": "reference-calico-cni"}


def test_calico_node_runs_like_calicoctl_node_run(mod: calico_mod.Calico) -> None:
    c = cluster("bgp")
    (spec,) = mod.daemon_specs(c, c.nodes[0])
    assert spec.image == "img/node"
    assert spec.command == ["start_runit"] and spec.entrypoint is None
    assert spec.network_mode == "container:tb-node-1"  # hostNetwork: the node's namespace
    env = spec.env
    assert env["DATASTORE_TYPE"] == "etcdv3"
    assert env["ETCD_ENDPOINTS"] == ETCD
    assert env["NODENAME"] == "tb-node-1"
    assert env["IP"] == "autodetect"
    assert env["IP_AUTODETECTION_METHOD"] == "interface=eth0"
    assert env["CALICO_NETWORKING_BACKEND"] == "bird"
    assert env["CALICO_IPV4POOL_CIDR"] == "192.168.0.0/16"
    assert env["CALICO_IPV4POOL_BLOCK_SIZE"] == "26"
    assert env["CALICO_IPV4POOL_IPIP"] == "Never"   # no ipip module in this kernel
    assert env["CALICO_IPV4POOL_VXLAN"] == "Never"
    assert env["CALICO_IPV4POOL_NAT_OUTGOING"] == "true"
    assert env["CALICO_MANAGE_CNI"] == "false"
    assert env["CALICO_DISABLE_FILE_LOGGING"] == "true"
    assert env["FELIX_DEFAULTENDPOINTTOHOSTACTION"] == "ACCEPT"
    assert env["FELIX_IPV6SUPPORT"] == "false"
    assert env["FELIX_HEALTHENABLED"] == "true"
    assert env["FELIX_IPTABLESBACKEND"] in ("Legacy", "NFT", "Auto")
    assert "FELIX_VXLANVNI" not in env
    assert set(spec.volumes.values()) == {"/var/run/calico", "/var/lib/calico",
                                          "/var/log/calico"}
    assert spec.volumes["tb-node-1-calico-lib"] == "/var/lib/calico"
    assert {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"} <= set(spec.cap_add)
    assert spec.role == "cni" and spec.labels["io.testbed.node"] == "tb-node-1"


def test_vxlan_backend_env(mod: calico_mod.Calico) -> None:
    c = cluster("vxlan", pod_cidr="10.48.0.0/16")
    env = mod.daemon_specs(c, c.nodes[1])[0].env
    assert env["CALICO_NETWORKING_BACKEND"] == "vxlan"
    assert env["CALICO_IPV4POOL_VXLAN"] == "Always"
    assert env["CALICO_IPV4POOL_IPIP"] == "Never"
    assert env["FELIX_VXLANVNI"] == "4096" and env["FELIX_VXLANPORT"] == "4789"
    assert env["CALICO_IPV4POOL_CIDR"] == "10.48.0.0/16"


def test_lib_modules_bound_read_only_only_where_the_host_has_them(
        mod: calico_mod.Calico, monkeypatch: pytest.MonkeyPatch) -> None:
    c = cluster()
    monkeypatch.setattr(calico_mod, "host_has_modules", lambda: True)
    assert mod.daemon_specs(c, c.nodes[0])[0].binds == {"/lib/modules": "/lib/modules"}
    monkeypatch.setattr(calico_mod, "host_has_modules", lambda: False)
    assert mod.daemon_specs(c, c.nodes[0])[0].binds == {}


def test_node_shares_cni_and_calico_state_dirs(mod: calico_mod.Calico) -> None:
    # The plugin reads /var/lib/calico/nodename and /mtu inside the node.
    assert mod.node_volumes["cni-bin"] == "/opt/cni/bin"
    assert mod.node_volumes["calico-lib"] == "/var/lib/calico"
    assert mod.node_volumes["calico-run"] == "/var/run/calico"
    assert "/var/lib/calico/nodename" in mod.ready_files


def test_conflist_is_the_k8s_less_one(mod: calico_mod.Calico) -> None:
    c = cluster()
    conf = mod.conflist(c, c.nodes[0])
    assert conf["cniVersion"] == "0.3.1"
    assert conf["name"] == "k8s-pod-network"
    calico, portmap = conf["plugins"]
    assert calico == {"type": "calico", "datastore_type": "etcdv3", "etcd_endpoints": ETCD,
                      "nodename": "tb-node-1", "mtu": 0,
                      "ipam": {"type": "calico-ipam", "assign_ipv4": "true"}}
    assert portmap["type"] == "portmap" and portmap["capabilities"] == {"portMappings": True}
    assert mod.conflist_name.endswith(".conflist")


def test_install_container_is_calico_cni_install(mod: calico_mod.Calico) -> None:
    c = cluster()
    (spec,) = mod.install_specs(c, c.nodes[1])
    assert spec.image == "img/cni"
    assert spec.entrypoint == ["/opt/cni/bin/install"]
    assert spec.env["SLEEP"] == "false"
    assert spec.env["CNI_CONF_NAME"] == mod.conflist_name
    assert json.loads(spec.env["CNI_NETWORK_CONFIG"]) == mod.conflist(c, c.nodes[1])
    assert spec.volumes == {"tb-node-2-cni-bin": "/host/opt/cni/bin",
                            "tb-node-2-cni-net": "/host/etc/cni/net.d"}
    assert spec.network_mode == "none"


def test_profile_written_first_is_allow_all(mod: calico_mod.Calico) -> None:
    keys = mod.datastore_keys(cluster())
    (key, value), = keys.items()
    assert key == "/calico/resources/v3/projectcalico.org/profiles/k8s-pod-network"
    doc = json.loads(value)
    assert doc["kind"] == "Profile" and doc["apiVersion"] == "projectcalico.org/v3"
    assert doc["spec"]["ingress"] == [{"action": "Allow"}]
    assert doc["spec"]["egress"] == [{"action": "Allow"}]
    assert doc["spec"]["labelsToApply"] == {"k8s-pod-network": ""}


class FakeProvider:
    """A fake provider: canned exec answers (the real one needs Docker)."""

    def __init__(self, answers: dict[str, ExecResult]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, list[str]]] = []

    def exec(self, container: str, argv: list[str], env: dict[str, str] | None = None,
             user: str = "") -> ExecResult:
        self.calls.append((container, argv))
        return self.answers.get(argv[0], ExecResult(1, "", "no such thing"))


BIRD_OUTPUT = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
static1    Static     master4    up     10:12:45.070
kernel1    Kernel     master4    up     10:12:38.340
Mesh_172_18_0_4 BGP        ---        up     10:12:38.732  Established
Mesh_172_18_0_5 BGP        ---        start  10:12:39.429  Active        Socket: Connection refused
"""


def test_node_status_reads_blocks_and_bgp(mod: calico_mod.Calico) -> None:
    prefix = "/calico/ipam/v2/host/tb-node-1/ipv4/block/"
    fake = FakeProvider({
        "etcdctl": ExecResult(0, f"{prefix}192.168.3.64-26\n\n{prefix}192.168.7.0-26\n", ""),
        "birdcl": ExecResult(0, BIRD_OUTPUT, ""),
    })
    status = mod.node_status(fake, "tb-node-1")  # type: ignore[arg-type]
    assert status["blocks"] == ["192.168.3.64/26", "192.168.7.0/26"]
    assert [(p["name"], p["state"]) for p in status["bgp_peers"]] == [
        ("Mesh_172_18_0_4", "Established"), ("Mesh_172_18_0_5", "Active")]
    assert ("tb-etcd", ["etcdctl", "get", "--prefix", "--keys-only", prefix]) in fake.calls
    assert fake.calls[1][0] == "tb-node-1-calico-node"
    assert fake.calls[1][1] == ["birdcl", "-s", "/var/run/calico/bird.ctl", "show", "protocols"]


# --- libcalico-go's layout ---------------------------------------------------------------------

def test_etcd_key_layout() -> None:
    assert model.block_key("192.168.3.64/26") == \
        "/calico/ipam/v2/assignment/ipv4/block/192.168.3.64-26"
    assert model.affinity_key("node-1", "192.168.3.64/26") == \
        "/calico/ipam/v2/host/node-1/ipv4/block/192.168.3.64-26"
    assert model.handle_key("k8s-pod-network.abc") == "/calico/ipam/v2/handle/k8s-pod-network.abc"
    assert model.resource_key("Node", "node-1") == \
        "/calico/resources/v3/projectcalico.org/nodes/node-1"
    assert model.resource_key("IPPool", "default-ipv4-ippool") == \
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool"
    assert model.resource_key("WorkloadEndpoint", "n-cni-c-eth0", "default") == \
        "/calico/resources/v3/projectcalico.org/workloadendpoints/default/n-cni-c-eth0"
    assert model.resource_key("ClusterInformation", "default") == \
        "/calico/resources/v3/projectcalico.org/clusterinformations/default"
    assert model.cidr_from_part("10.0.0.64-26") == "10.0.0.64/26"


def test_workload_endpoint_names_escape_dashes() -> None:
    # names.WorkloadEndpointIdentifiers for orchestrator "cni": <node>-cni-<containerID>-<endpoint>
    assert model.wep_name("tb-node-1", "abc123", "eth0") == "tb--node--1-cni-abc123-eth0"
    assert model.wep_prefix("tb-node-1", "abc123") == "tb--node--1-cni-abc123-"
    assert model.host_veth_name("0123456789abcdef") == "cali0123456789a"
    assert model.handle_id("k8s-pod-network", "c0ffee") == "k8s-pod-network.c0ffee"
    with pytest.raises(ValueError):
        model.wep_name("-bad", "c", "eth0")


def test_default_pool_spec_matches_clientv3_defaults() -> None:
    spec = model.ip_pool_spec("192.168.0.0/16", vxlan="Always")
    assert spec["cidr"] == "192.168.0.0/16" and spec["blockSize"] == 26
    assert spec["ipipMode"] == "Never" and spec["vxlanMode"] == "Always"
    assert spec["natOutgoing"] is True and spec["nodeSelector"] == "all()"
    assert spec["allowedUses"] == ["Workload", "Tunnel"]
    assert model.pool_mode("always") == "Always" and model.pool_mode("") == "Never"
    assert model.pool_mode("cross-subnet") == "CrossSubnet"


# --- IPAM --------------------------------------------------------------------------------------

def test_fnv32_is_go_hash_fnv_new32() -> None:
    assert ipam.fnv32(b"") == 0x811C9DC5
    assert ipam.fnv32(b"a") == 0x050C5D7E  # FNV-1 (multiply, then xor)


def test_block_math() -> None:
    assert ipam.block_count("192.168.0.0/16", 26) == 1024
    assert ipam.block_at("192.168.0.0/16", 26, 0) == "192.168.0.0/26"
    assert ipam.block_at("192.168.0.0/16", 26, 5) == "192.168.1.64/26"
    blocks = list(ipam.candidate_blocks("10.0.0.0/24", 26, "node-1"))
    assert sorted(blocks) == ["10.0.0.0/26", "10.0.0.128/26", "10.0.0.192/26", "10.0.0.64/26"]
    starts = {next(ipam.candidate_blocks("192.168.0.0/16", 26, f"node-{i}")) for i in range(8)}
    assert len(starts) > 1  # hosts start their search in different places
    assert ipam.block_for("10.0.0.77", 26) == "10.0.0.64/26"


def test_block_allocations_are_fifo_with_compacted_attributes() -> None:
    block = ipam.new_block("10.0.0.64/26", "n1")
    assert block["affinity"] == "host:n1" and len(block["allocations"]) == 64
    a = ipam.assign_in_block(block, "h-a", {"node": "n1"})
    b = ipam.assign_in_block(block, "h-b", {"node": "n1"})
    assert (a, b) == (0, 1)
    assert ipam.ordinal_ip(block, b) == "10.0.0.65"
    assert block["sequenceNumber"] == 2 and block["sequenceNumberForAllocation"] == {"0": 1,
                                                                                     "1": 2}
    assert ipam.release_in_block(block, "h-a") == [0]
    assert block["unallocated"][-1] == 0  # released to the tail: reused last
    assert block["attributes"] == [{"handle_id": "h-b", "secondary": {"node": "n1"}}]
    assert block["allocations"][1] == 0 and ipam.in_use(block) == 1


class FakeEtcd:
    """An in-memory fake of the etcd v3 gateway client (kv, prefix reads, txn compares)."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[bytes, int]] = {}
        self.rev = 1

    def _kv(self, key: str) -> KeyValue:
        value, mod = self.kv[key]
        return KeyValue(key=key, value=value, mod_revision=mod, create_revision=mod)

    def get(self, key: str) -> KeyValue | None:
        return self._kv(key) if key in self.kv else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return [self._kv(k) for k in sorted(self.kv) if k.startswith(prefix)], self.rev

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        self.rev += 1
        self.kv[key] = (value.encode() if isinstance(value, str) else value, self.rev)
        return self.rev

    def delete(self, key: str) -> int:
        return 1 if self.kv.pop(key, None) else 0

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/v3/kv/txn"
        (cmp,) = body["compare"]
        key = unb64(cmp["key"]).decode()
        current = self.kv[key][1] if key in self.kv else 0
        want = int(cmp.get("mod_revision") or cmp.get("create_revision") or 0)
        if current != want:
            return {"succeeded": False}
        (op,) = body["success"]
        if "request_put" in op:
            self.put(key, unb64(op["request_put"]["value"]))
        else:
            self.delete(key)
        return {"succeeded": True}


def pool_doc(cidr: str = "10.0.0.0/24", vxlan: str = "Never") -> dict[str, Any]:
    return model.resource("IPPool", "default-ipv4-ippool", model.ip_pool_spec(cidr, vxlan=vxlan))


def test_ipam_claims_a_block_then_fills_it_then_claims_another() -> None:
    etcd = FakeEtcd()
    etcd.put(model.resource_key("IPPool", "default-ipv4-ippool"), json.dumps(pool_doc()))
    client = ipam.Ipam(etcd, "n1")  # type: ignore[arg-type]
    first = client.auto_assign("net.c1", {"node": "n1"})
    block = ipam.block_for(first.split("/")[0], 26)
    assert first.endswith("/26")
    aff = json.loads(etcd.kv[model.affinity_key("n1", block)][0])
    assert aff == {"state": "confirmed", "deleted": False}
    assert json.loads(etcd.kv[model.handle_key("net.c1")][0]) == {"block": {block: 1},
                                                                  "deleted": False}
    ips = [first] + [client.auto_assign(f"net.c{i}", {"node": "n1"}) for i in range(2, 66)]
    assert len(set(ips)) == 65
    assert len(client.affine_blocks()) == 2  # the 65th address needed a second block
    other = ipam.Ipam(etcd, "n2").auto_assign("net.x", {"node": "n2"})  # type: ignore[arg-type]
    assert ipam.block_for(other.split("/")[0], 26) not in {c for c, _ in client.affine_blocks()}


def test_ipam_release_by_handle_frees_and_forgets() -> None:
    etcd = FakeEtcd()
    etcd.put(model.resource_key("IPPool", "p"), json.dumps(pool_doc()))
    client = ipam.Ipam(etcd, "n1")  # type: ignore[arg-type]
    ip = client.auto_assign("net.c1", {"node": "n1"}).split("/")[0]
    assert client.ips_by_handle("net.c1") == [ip]
    assert client.release_by_handle("net.c1") == [ip]
    assert model.handle_key("net.c1") not in etcd.kv
    with pytest.raises(ipam.NotFound):
        client.release_by_handle("net.c1")
    block = json.loads(etcd.kv[model.block_key(ipam.block_for(ip, 26))][0])
    assert ipam.in_use(block) == 0


def test_ipam_refuses_without_a_usable_pool() -> None:
    etcd = FakeEtcd()
    with pytest.raises(ipam.IpamError):
        ipam.Ipam(etcd, "n1").auto_assign("h", {})  # type: ignore[arg-type]


def test_compare_and_swap_goes_through_a_txn() -> None:
    etcd = FakeEtcd()
    assert ipam.put_if(etcd, "/k", "1", 0)  # type: ignore[arg-type]
    assert not ipam.put_if(etcd, "/k", "2", 0)  # type: ignore[arg-type]
    rev = etcd.kv["/k"][1]
    assert ipam.put_if(etcd, "/k", "3", rev)  # type: ignore[arg-type]
    assert not ipam.delete_if(etcd, "/k", rev)  # type: ignore[arg-type]
    assert b64("x") == "eA=="


# --- confd: bird.cfg ---------------------------------------------------------------------------

def nodes_doc(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"metadata": {"name": n}, "spec": {"bgp": {"ipv4Address": ip}}} for n, ip in pairs]


def test_bird_config_full_mesh_and_blocks() -> None:
    nodes = nodes_doc(("a", "172.18.0.3/16"), ("b", "172.18.0.4/16"), ("c", "172.18.0.10/16"))
    cfg = confd.BirdConfig(node_name="a", node_ip="172.18.0.3",
                           peers=confd.mesh_peers("a", "172.18.0.3", nodes, 64512),
                           blocks=[("192.168.45.0/26", "confirmed")],
                           pools=[confd.PoolView("192.168.0.0/16")])
    files = confd.render_bird(cfg)
    bird = files["bird.cfg"]
    assert "router id 172.18.0.3;" in bird
    assert 'include "bird_aggr.cfg";' in bird and 'include "bird_ipam.cfg";' in bird
    assert "local as 64512;" in bird
    assert "protocol bgp Mesh_172_18_0_4 from bgp_template {" in bird
    assert "neighbor 172.18.0.4 as 64512;" in bird
    assert "Mesh_172_18_0_3" not in bird  # never peers with itself
    # The mesh is one-way: passive toward peers whose address sorts higher (as strings).
    mesh4 = bird.split("Mesh_172_18_0_4")[1].split("}")[0]
    mesh10 = bird.split("Mesh_172_18_0_10")[1].split("}")[0]
    assert "passive on" in mesh4 and "passive on" not in mesh10
    assert "export filter { calico_export_to_bgp_peers(true); reject; };" in bird
    aggr = files["bird_aggr.cfg"]
    assert "route 192.168.45.0/26 blackhole;" in aggr
    assert "if ( net = 192.168.45.0/26 ) then { accept; }" in aggr
    assert "if ( net ~ 192.168.45.0/26 ) then { reject; }" in aggr
    ipam_cfg = files["bird_ipam.cfg"]
    assert "if ( net ~ 192.168.0.0/16 ) then {" in ipam_cfg
    assert "filter calico_kernel_programming" in ipam_cfg
    assert "if ( source = RTS_DEVICE ) then reject;" in ipam_cfg


def test_bird_config_vxlan_pools_not_programmed_and_peerless() -> None:
    cfg = confd.BirdConfig(node_name="a", node_ip="172.18.0.3", blocks=[],
                           pools=[confd.PoolView("10.48.0.0/16", vxlan_mode="Always")])
    files = confd.render_bird(cfg)
    assert "# No BGP peers configured for this node" in files["bird.cfg"]
    assert "# No IP blocks or static routes for this host." in files["bird_aggr.cfg"]
    kernel = files["bird_ipam.cfg"].split("filter calico_kernel_programming")[1]
    assert "reject;" in kernel.split("10.48.0.0/16")[1].split("}")[0]


def test_global_bgp_peers_apply_per_node() -> None:
    peers = confd.global_peers("a", "172.18.0.3", [
        {"spec": {"peerIP": "172.18.0.100", "asNumber": 65000}},
        {"spec": {"peerIP": "172.18.0.101", "asNumber": 65001, "node": "b"}}])
    assert [(p.name, p.as_num) for p in peers] == [("Global_172_18_0_100", 65000)]


# --- felix: selectors and rules ----------------------------------------------------------------

def test_selectors() -> None:
    labels = {"app": "web", "k8s-pod-network": "", "projectcalico.org/namespace": "default"}
    assert selector.matches("all()", labels)
    assert selector.matches("has(k8s-pod-network)", labels)
    assert selector.matches("app == 'web' && !has(tier)", labels)
    assert selector.matches("app in {'db', 'web'}", labels)
    assert not selector.matches("app not in {'web'}", labels)
    assert selector.matches("(app == 'x' || projectcalico.org/namespace == 'default')", labels)
    with pytest.raises(selector.SelectorError):
        selector.parse("app ==")


def ep(name: str, iface: str, ip: str, node: str = "n1", **labels: str) -> rules.Endpoint:
    base = {"projectcalico.org/namespace": "default", "k8s-pod-network": ""}
    return rules.Endpoint(name=name, namespace="default", node=node, iface=iface, ips=(ip,),
                          labels={**base, **labels}, profiles=("k8s-pod-network",))


def test_felix_rules_shape_and_nat_outgoing() -> None:
    guarded = ep("g", "caliaaaaaaaaaaa", "10.48.0.5/32", app="guarded")
    client = ep("c", "calibbbbbbbbbbb", "10.48.1.7/32", node="n2", role="client")
    policy = rules.Policy.from_resource({
        "kind": "NetworkPolicy",
        "metadata": {"name": "knp.default.guarded", "namespace": "default"},
        "spec": {"selector": "app == 'guarded'", "order": 1000,
                 "ingress": [{"action": "Allow", "protocol": "TCP",
                              "source": {"selector": "role == 'client'"},
                              "destination": {"ports": [8080]}}]}})
    assert policy.types == ("Ingress",)
    profile = {"spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}}
    rs = rules.build(local=[guarded], all_endpoints=[guarded, client],
                     profiles={"k8s-pod-network": profile}, policies=[policy],
                     pools=[("10.48.0.0/16", True)], vxlan=False, vxlan_port=4789,
                     vxlan_peers=[], to_host_action="ACCEPT")
    filt = rs.rules["filter"]
    assert "-A cali-FORWARD -i cali+ -j cali-from-wl-dispatch" in filt
    assert "-A cali-to-wl-dispatch -o caliaaaaaaaaaaa -g cali-tw-caliaaaaaaaaaaa" in filt
    tw = [r for r in filt if r.startswith("-A cali-tw-caliaaaaaaaaaaa ")]
    assert "--ctstate RELATED,ESTABLISHED -j ACCEPT" in tw[0]
    assert any("Drop if no policies passed packet" in r for r in tw)
    assert tw[-1].endswith("-j DROP") and "Drop if no profiles matched" in tw[-1]
    pi = [r for r in filt if r.startswith("-A cali-pi-")]
    assert "-p tcp" in pi[0] and "--dports 8080" in pi[0] and "0x10000/0x10000" in pi[0]
    (sel_set,) = [n for n in rs.ipsets if n.startswith("cali40s:")]
    assert rs.ipsets[sel_set] == {"10.48.1.7/32"}  # the client, wherever it runs
    assert len(sel_set) <= 31
    assert any("Configured DefaultEndpointToHostAction" in r and r.endswith("-j ACCEPT")
               for r in filt)
    assert rs.ipsets["cali40masq-ipam-pools"] == {"10.48.0.0/16"}
    assert ("-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src -m set ! "
            "--match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully") in rs.rules["nat"]
    payload = rules.restore_payload(rs, {"filter": ["cali-tw-caligone", "INPUT"]})
    assert payload.startswith("*filter\n:cali-FORWARD - [0:0]")
    assert "-X cali-tw-caligone" in payload and "-X INPUT" not in payload
    assert all(len(c) <= 28 for cs in rs.chains.values() for c in cs)


def test_policies_order_then_name() -> None:
    def pol(name: str, order: float | None) -> rules.Policy:
        return rules.Policy(name, "default", order, "all()", ("Ingress",), (), ())
    ordered = rules.sort_policies([pol("b", None), pol("a", 10), pol("c", 1), pol("a2", None)])
    assert [p.name for p in ordered] == ["c", "a", "a2", "b"]


# --- the CNI plugin ----------------------------------------------------------------------------

def test_results_per_cni_version() -> None:
    one = plugin.format_result("1.0.0", ["10.0.0.1/32"], [{"name": "cali1"}])
    assert one["ips"] == [{"address": "10.0.0.1/32"}] and one["interfaces"] == [{"name": "cali1"}]
    old = plugin.format_result("0.3.1", ["10.0.0.1/32"], [])
    assert old["ips"] == [{"version": "4", "address": "10.0.0.1/32"}]
    assert plugin.format_result("0.2.0", ["10.0.0.1/32"], [])["ip4"] == {"ip": "10.0.0.1/32"}
    assert plugin.result_ips(old) == ["10.0.0.1/32"]


def test_plugin_takes_the_cni_orchestrator_path_only() -> None:
    args = plugin.Args.from_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc",
                                 "CNI_NETNS": "/var/run/netns/p", "CNI_IFNAME": "eth0",
                                 "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "IgnoreUnknown=1"})
    ids = plugin.identifiers(args, "tb-node-1")
    assert ids.namespace == "default" and ids.wep_name == "tb--node--1-cni-abc-eth0"
    k8s = plugin.Args.from_env({**os.environ, "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "abc",
                                "CNI_IFNAME": "eth0", "CNI_PATH": "/x",
                                "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"})
    with pytest.raises(plugin.PluginError):
        plugin.identifiers(k8s, "tb-node-1")
    with pytest.raises(plugin.PluginError):
        plugin.Args.from_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc"})


def test_netconf_reads_calico_fields() -> None:
    conf = plugin.NetConf.parse(json.dumps({
        "name": "k8s-pod-network", "cniVersion": "0.3.1", "type": "calico",
        "datastore_type": "etcdv3", "etcd_endpoints": ETCD, "nodename": "tb-node-1", "mtu": 0,
        "ipam": {"type": "calico-ipam", "assign_ipv4": "true"}}).encode())
    assert (conf.name, conf.nodename, conf.mtu, conf.etcd_endpoints) == (
        "k8s-pod-network", "tb-node-1", 0, ETCD)
    assert conf.ipam["type"] == "calico-ipam" and conf.policy_type == ""
    bad = plugin.NetConf.parse(b'{"name": "x", "datastore_type": "kubernetes"}')
    with pytest.raises(plugin.PluginError):
        bad.client()


def test_install_copies_binaries_and_writes_the_conflist(tmp_path: Path) -> None:
    src = tmp_path / "image-bin"
    src.mkdir()
    for name in ("calico", "calico-ipam", "install", "portmap"):
        (src / name).write_text(f"#!{name}\n")
        (src / name).chmod(0o755)
    host_bin = tmp_path / "host/opt/cni/bin"
    host_net = tmp_path / "host/etc/cni/net.d"
    host_bin.mkdir(parents=True)
    host_net.mkdir(parents=True)
    (tmp_path / "debian-portmap").write_text("debian")
    (host_bin / "portmap").symlink_to(tmp_path / "debian-portmap")
    conf = {"name": "k8s-pod-network", "cniVersion": "0.3.1", "plugins": [{"type": "calico"}]}
    code = plugin.install({"CNI_NETWORK_CONFIG": json.dumps(conf), "SLEEP": "false",
                           "CNI_CONF_NAME": "10-calico.conflist"},
                          src_dir=str(src), host_root=str(tmp_path / "host"))
    assert code == 0
    assert sorted(p.name for p in host_bin.iterdir()) == ["calico", "calico-ipam", "install",
                                                          "portmap"]
    assert not (host_bin / "portmap").is_symlink()  # replaced, like upstream's rename
    assert (tmp_path / "debian-portmap").read_text() == "debian"
    assert os.access(host_bin / "calico", os.X_OK)
    assert json.loads((host_net / "10-calico.conflist").read_text()) == conf


def test_pool_view_contains() -> None:
    pool = ipam.Pool.from_resource(pool_doc("10.48.0.0/16"))
    assert pool.contains("10.48.3.64/26") and not pool.contains("10.49.0.0/26")
    assert ipaddress.ip_network(pool.cidr).prefixlen == 16


def test_network_policy_as_kube_controllers_writes_it(mod: calico_mod.Calico) -> None:
    from testbed.scenario import load

    scenario = load(None)
    (pol,) = scenario.network_policies
    keys = mod.policy_keys(scenario)
    (key, value), = keys.items()
    assert key == ("/calico/resources/v3/projectcalico.org/networkpolicies/default/"
                   f"knp.default.{pol.name}")
    doc = json.loads(value)
    assert doc["kind"] == "NetworkPolicy" and doc["metadata"]["namespace"] == "default"
    assert doc["spec"]["order"] == 1000 and doc["spec"]["types"] == ["Ingress"]
    assert doc["spec"]["selector"] == "app == 'guarded'"
    assert doc["spec"]["ingress"] == [{"action": "Allow", "protocol": "TCP",
                                       "destination": {"ports": [8080]},
                                       "source": {"selector": "role == 'client'"}}]
    policy = rules.Policy.from_resource(doc)
    guarded = ep("g", "caliaaaaaaaaaaa", "10.48.0.5/32", app="guarded")
    assert policy.applies_to(guarded) and not policy.applies_to(ep("e", "calib", "10.0.0.1/32"))
    assert calico_mod.wep_name("tb-node-1", "c0ffee") == model.wep_name("tb-node-1", "c0ffee",
                                                                          "eth0")


def test_readiness_is_calico_nodes_probe(mod: calico_mod.Calico) -> None:
    bgp = FakeProvider({"test": ExecResult(0, "", ""), "calico-node": ExecResult(0, "", "")})
    assert mod.ready(bgp, "tb-node-1")  # type: ignore[arg-type]
    assert bgp.calls[-1] == ("tb-node-1-calico-node",
                             ["calico-node", "-felix-ready", "-bird-ready"])
    vxlan = FakeProvider({"calico-node": ExecResult(1, "", "not ready")})
    assert not mod.ready(vxlan, "tb-node-1")  # type: ignore[arg-type]
    assert vxlan.calls[-1][1] == ["calico-node", "-felix-ready"]  # no BIRD service enabled
