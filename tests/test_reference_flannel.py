"""Pure-logic tests of the reference Flannel (flanneld and the CNI plugin); no Docker."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import stat
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from testbed.reference.etcdv3 import EtcdError, KeyValue, prefix_end
from testbed.reference.flannel import cni_plugin as cni
from testbed.reference.flannel import flanneld as fd

NET = IPv4Network("10.244.0.0/16")


def cfg(**overrides: Any) -> fd.NetConfig:
    """A parsed config for 10.244.0.0/16 with optional extra keys."""
    doc: dict[str, Any] = {"Network": str(NET), "Backend": {"Type": "vxlan"}}
    doc.update(overrides)
    return fd.parse_config(json.dumps(doc))


# -- network config -----------------------------------------------------------
def test_config_defaults_skip_first_subnet_and_end_at_last() -> None:
    c = cfg()
    assert c.subnet_len == 24
    assert c.subnet_min == IPv4Address("10.244.1.0")
    assert c.subnet_max == IPv4Address("10.244.255.0")
    assert c.backend_type == "vxlan"


def test_config_small_network_splits_in_four() -> None:
    c = fd.parse_config('{"Network": "10.0.0.0/26", "Backend": {"Type": "host-gw"}}')
    assert c.subnet_len == 28
    assert c.subnet_min == IPv4Address("10.0.0.16")
    assert c.subnet_max == IPv4Address("10.0.0.48")


def test_config_keys_are_case_insensitive_and_backend_defaults_to_udp() -> None:
    c = fd.parse_config('{"network": "10.1.0.0/16", "subnetlen": 26}')
    assert c.network == IPv4Network("10.1.0.0/16")
    assert c.subnet_len == 26
    assert c.backend_type == "udp"


@pytest.mark.parametrize(("doc", "words"), [
    ({}, "define a correct Network"),
    ({"Network": "10.0.0.0/29"}, "too small"),
    ({"Network": "10.0.0.0/16", "SubnetLen": 31}, "less than /31"),
    ({"Network": "10.0.0.0/16", "SubnetLen": 17}, "at least four subnets"),
    ({"Network": "10.0.0.0/16", "SubnetMin": "10.1.0.0"}, "SubnetMin is not in the range"),
    ({"Network": "10.0.0.0/16", "SubnetMax": "10.0.3.7"}, "SubnetMax is not on a SubnetLen"),
])
def test_config_rejects_what_upstream_rejects(doc: dict[str, Any], words: str) -> None:
    with pytest.raises(fd.ConfigError, match=words):
        fd.parse_config(json.dumps(doc))


def test_config_rejects_non_json() -> None:
    with pytest.raises(fd.ConfigError):
        fd.parse_config("Network=10.0.0.0/16")


# -- subnets and allocation -----------------------------------------------------
def test_subnet_key_roundtrip_and_rejects_garbage() -> None:
    sn = IPv4Network("10.244.3.0/24")
    key = "/coreos.com/network/subnets/" + fd.make_subnet_key(sn)
    assert key.endswith("/10.244.3.0-24")
    assert fd.parse_subnet_key(key) == sn
    assert fd.parse_subnet_key("/coreos.com/network/config") is None
    assert fd.parse_subnet_key("/x/subnets/10.244.3.0-99") is None


def test_free_subnets_skip_leased_ones_in_order() -> None:
    c = cfg()
    taken = [IPv4Network("10.244.1.0/24"), IPv4Network("10.244.3.0/24")]
    free = fd.free_subnets(c, taken, limit=3)
    assert free == [IPv4Network(f"10.244.{i}.0/24") for i in (2, 4, 5)]


def test_free_subnets_respect_subnet_max() -> None:
    c = cfg(SubnetMin="10.244.10.0", SubnetMax="10.244.12.0")
    assert [str(s) for s in fd.free_subnets(c, [])] == [
        "10.244.10.0/24", "10.244.11.0/24", "10.244.12.0/24"]


def test_allocate_picks_a_free_subnet_within_the_window() -> None:
    c = cfg()
    taken = [IPv4Network(f"10.244.{i}.0/24") for i in range(1, 50)]
    picks = {fd.allocate_subnet(c, taken, random.Random(seed)) for seed in range(40)}
    assert all(50 <= int(p.network_address.packed[2]) < 150 for p in picks)
    assert len(picks) > 1  # random among candidates, not always the first


def test_allocate_out_of_subnets_is_fatal() -> None:
    c = cfg(SubnetMin="10.244.10.0", SubnetMax="10.244.10.0")
    with pytest.raises(fd.Fatal, match="out of subnets"):
        fd.allocate_subnet(c, [IPv4Network("10.244.10.0/24")])


def test_subnet_compatible_checks_range_and_length() -> None:
    c = cfg(SubnetMin="10.244.10.0", SubnetMax="10.244.20.0")
    assert fd.subnet_compatible(c, IPv4Network("10.244.15.0/24"))
    assert not fd.subnet_compatible(c, IPv4Network("10.244.5.0/24"))
    assert not fd.subnet_compatible(c, IPv4Network("10.244.15.0/25"))


# -- lease JSON ---------------------------------------------------------------
def test_vxlan_lease_json_has_upstream_shape_and_order() -> None:
    attrs = fd.LeaseAttrs(IPv4Address("172.18.0.3"), "vxlan",
                          fd.vxlan_backend_data(1, "AA:BB:CC:00:11:22"))
    text = attrs.to_json()
    assert list(json.loads(text)) == ["PublicIP", "PublicIPv6", "BackendType", "BackendData"]
    assert json.loads(text) == {"PublicIP": "172.18.0.3", "PublicIPv6": None,
                                "BackendType": "vxlan",
                                "BackendData": {"VNI": 1, "VtepMAC": "aa:bb:cc:00:11:22"}}
    assert " " not in text  # compact, like Go's json.Marshal
    assert fd.LeaseAttrs.from_json(text) == attrs


def test_host_gw_lease_json_omits_empty_backend_data() -> None:
    text = fd.LeaseAttrs(IPv4Address("172.18.0.4"), "host-gw").to_json()
    assert json.loads(text) == {"PublicIP": "172.18.0.4", "PublicIPv6": None,
                                "BackendType": "host-gw"}


def test_lease_json_parses_case_insensitively() -> None:
    attrs = fd.LeaseAttrs.from_json(b'{"publicip":"10.0.0.9","backendtype":"host-gw"}')
    assert attrs.public_ip == IPv4Address("10.0.0.9")
    assert attrs.backend_type == "host-gw"
    with pytest.raises(ValueError):
        fd.LeaseAttrs.from_json("[1]")


# -- lease acquisition ----------------------------------------------------------
class FakeStore:
    """An in-memory lease registry with an optional number of lost create races."""

    def __init__(self, leases: list[fd.Lease] | None = None, races: int = 0) -> None:
        self.data = {le.subnet: le for le in leases or []}
        self.races = races
        self.calls: list[tuple[str, Any]] = []
        self.next_id = 100

    def leases(self) -> tuple[list[fd.Lease], int]:
        return list(self.data.values()), 1

    def create(self, subnet: IPv4Network, attrs: fd.LeaseAttrs, ttl: int) -> fd.Lease | None:
        self.calls.append(("create", subnet))
        if self.races:
            self.races -= 1
            return None
        if subnet in self.data:
            return None
        self.next_id += 1
        self.data[subnet] = fd.Lease(subnet, attrs, self.next_id)
        return self.data[subnet]

    def update(self, subnet: IPv4Network, attrs: fd.LeaseAttrs, ttl: int,
               old_lease: int = 0) -> fd.Lease:
        self.calls.append(("update", (subnet, old_lease, ttl)))
        self.next_id += 1
        self.data[subnet] = fd.Lease(subnet, attrs, self.next_id)
        return self.data[subnet]

    def delete(self, subnet: IPv4Network) -> None:
        self.calls.append(("delete", subnet))
        self.data.pop(subnet, None)


def attrs_for(ip: str) -> fd.LeaseAttrs:
    return fd.LeaseAttrs(IPv4Address(ip), "vxlan", fd.vxlan_backend_data(1, "02:00:00:00:00:01"))


def test_restarted_node_reuses_its_lease_by_public_ip() -> None:
    mine = fd.Lease(IPv4Network("10.244.7.0/24"), attrs_for("172.18.0.3"), 42)
    other = fd.Lease(IPv4Network("10.244.8.0/24"), attrs_for("172.18.0.4"), 43)
    store = FakeStore([mine, other])
    lease = fd.acquire_lease(store, cfg(), attrs_for("172.18.0.3"), None)
    assert lease.subnet == mine.subnet
    assert store.calls == [("update", (mine.subnet, 42, 24 * 3600))]


def test_incompatible_own_lease_is_deleted_and_replaced() -> None:
    mine = fd.Lease(IPv4Network("10.244.7.0/25"), attrs_for("172.18.0.3"), 42)
    store = FakeStore([mine])
    lease = fd.acquire_lease(store, cfg(), attrs_for("172.18.0.3"), None)
    assert ("delete", mine.subnet) in store.calls
    assert lease.subnet.prefixlen == 24
    assert mine.subnet not in store.data


def test_previous_subnet_from_subnet_file_is_reused_when_free() -> None:
    store = FakeStore()
    prev = IPv4Network("10.244.77.0/24")
    assert fd.acquire_lease(store, cfg(), attrs_for("172.18.0.3"), prev).subnet == prev


def test_previous_subnet_taken_by_another_node_is_not_reused() -> None:
    prev = IPv4Network("10.244.77.0/24")
    store = FakeStore([fd.Lease(prev, attrs_for("172.18.0.9"), 1)])
    lease = fd.acquire_lease(store, cfg(), attrs_for("172.18.0.3"), prev)
    assert lease.subnet != prev
    assert store.data[prev].attrs.public_ip == IPv4Address("172.18.0.9")


def test_lost_create_races_are_retried() -> None:
    store = FakeStore(races=3)
    lease = fd.acquire_lease(store, cfg(), attrs_for("172.18.0.3"), None)
    assert [c[0] for c in store.calls] == ["create"] * 4
    assert store.data[lease.subnet] == lease


def test_too_many_races_is_fatal() -> None:
    with pytest.raises(fd.Fatal, match="Max retries"):
        fd.acquire_lease(FakeStore(races=100), cfg(), attrs_for("172.18.0.3"), None)


# -- reconciliation (which leases get programmed/removed) ------------------------
class RecordingBackend(fd.Backend):
    """A backend that records add/remove instead of touching netlink."""

    type = "vxlan"

    def __init__(self) -> None:
        ext = fd.ExternalInterface("eth0", 2, 1500, IPv4Address("172.18.0.3"),
                                   IPv4Address("172.18.0.3"))
        super().__init__(None, ext, cfg())
        self.log: list[tuple[str, str]] = []

    def prepare(self) -> fd.LeaseAttrs:
        return attrs_for("172.18.0.3")

    def add(self, lease: fd.Lease) -> None:
        self.log.append(("add", str(lease.subnet)))

    def remove(self, lease: fd.Lease) -> None:
        self.log.append(("remove", str(lease.subnet)))


def test_reconcile_excludes_own_and_foreign_backends_and_removes_vanished() -> None:
    own = IPv4Network("10.244.1.0/24")
    a = fd.Lease(IPv4Network("10.244.2.0/24"), attrs_for("172.18.0.4"))
    b = fd.Lease(IPv4Network("10.244.3.0/24"), attrs_for("172.18.0.5"))
    hostgw = fd.Lease(IPv4Network("10.244.4.0/24"),
                      fd.LeaseAttrs(IPv4Address("172.18.0.6"), "host-gw"))
    be = RecordingBackend()
    be.reconcile([fd.Lease(own, attrs_for("172.18.0.3")), a, b, hostgw], own)
    assert sorted(be.log) == [("add", "10.244.2.0/24"), ("add", "10.244.3.0/24")]
    be.log.clear()
    be.reconcile([a], own)
    assert be.log == [("remove", "10.244.3.0/24"), ("add", "10.244.2.0/24")]


def test_reconcile_reprograms_a_lease_whose_attributes_changed() -> None:
    own = IPv4Network("10.244.1.0/24")
    sn = IPv4Network("10.244.2.0/24")
    be = RecordingBackend()
    be.reconcile([fd.Lease(sn, attrs_for("172.18.0.4"))], own)
    be.log.clear()
    be.reconcile([fd.Lease(sn, attrs_for("172.18.0.40"))], own)
    assert be.log == [("remove", "10.244.2.0/24"), ("add", "10.244.2.0/24")]
    assert be.programmed[sn].attrs.public_ip == IPv4Address("172.18.0.40")


def test_vxlan_options_defaults_and_validation() -> None:
    opts = fd.VxlanOptions.from_backend({"Type": "vxlan"})
    assert (opts.vni, opts.port, opts.direct_routing) == (1, 0, False)
    opts = fd.VxlanOptions.from_backend({"type": "vxlan", "vni": 4, "port": 4789,
                                         "DirectRouting": True, "MTU": 1400})
    assert (opts.vni, opts.port, opts.mtu, opts.direct_routing) == (4, 4789, 1400, True)
    with pytest.raises(fd.Fatal):
        fd.VxlanOptions.from_backend({"VNI": 1 << 24})


def test_random_mac_is_locally_administered_unicast() -> None:
    for seed in range(20):
        mac = fd.random_mac(random.Random(seed))
        first = int(mac.split(":")[0], 16)
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
        assert first & 0x02 and not first & 0x01


# -- subnet file ----------------------------------------------------------------
def test_subnet_file_renders_first_usable_ip_and_parses_back(tmp_path: Path) -> None:
    text = fd.render_subnet_file(NET, IPv4Network("10.244.3.0/24"), 1450, True)
    assert text.splitlines() == ["FLANNEL_NETWORK=10.244.0.0/16", "FLANNEL_SUBNET=10.244.3.1/24",
                                 "FLANNEL_MTU=1450", "FLANNEL_IPMASQ=true"]
    path = tmp_path / "run" / "subnet.env"
    fd.write_file_atomic(str(path), text)
    assert path.read_text() == text
    assert os.listdir(path.parent) == ["subnet.env"]  # no temp file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    values = fd.read_subnet_file(str(path))
    assert fd.env_cidr(values, "FLANNEL_SUBNET") == IPv4Network("10.244.3.0/24")
    assert fd.env_cidr(values, "FLANNEL_NETWORK") == NET
    assert fd.read_subnet_file(str(tmp_path / "missing")) == {}


def test_env_parser_tolerates_comments_quotes_and_export() -> None:
    values = fd.parse_env('# c\n\nexport A="1"\nB=\'x y\'\nbad line\nC=3=4\n')
    assert values == {"A": "1", "B": "x y", "C": "3=4"}


# -- flags --------------------------------------------------------------------
def test_flag_defaults_match_upstream() -> None:
    opts = fd.parse_options([], {})
    assert opts.etcd_prefix == "/coreos.com/network"
    assert "http://127.0.0.1:2379" in opts.etcd_endpoints.split(",")
    assert opts.subnet_file == "/run/flannel/subnet.env"
    assert (opts.ip_masq, opts.iptables_forward_rules) == (False, True)
    assert (opts.healthz_ip, opts.healthz_port, opts.subnet_lease_renew_margin) == \
        ("0.0.0.0", 0, 60)


def test_env_fallback_applies_only_to_flags_not_given() -> None:
    env = {"FLANNELD_IP_MASQ": "true", "FLANNELD_IFACE": "eth1", "FLANNELD_ETCD_PREFIX": "/p",
           "FLANNELD_HEALTHZ_PORT": "8471"}
    opts = fd.parse_options(["--etcd-prefix=/cli", "--iptables-forward-rules=false"], env)
    assert opts.etcd_prefix == "/cli"
    assert opts.ip_masq is True
    assert opts.iface == ["eth1"]
    assert opts.healthz_port == 8471
    assert opts.iptables_forward_rules is False


def test_go_style_flags_repeatable_iface_and_ignored_tls_flags() -> None:
    argv = ["-etcd-endpoints=http://10.0.0.2:2379", "--iface=eth0", "--iface", "10.0.0.5",
            "--ip-masq", "-v=2", "--etcd-cafile=/ca.pem", "--etcd-username", "u"]
    opts = fd.parse_options(argv, {})
    assert opts.etcd_endpoints == "http://10.0.0.2:2379"
    assert opts.iface == ["eth0", "10.0.0.5"]
    assert opts.ip_masq is True
    assert opts.v == 2
    assert opts.ignored["etcd-cafile"] == "/ca.pem"


def test_bad_flag_values_exit_like_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        fd.parse_options(["--healthz-port=abc"], {})
    with pytest.raises(SystemExit):
        fd.parse_options(["--no-such-flag"], {})


def test_go_parse_bool() -> None:
    assert [fd.parse_bool(x) for x in ("1", "t", "TRUE", "0", "F", "false")] == \
        [True, True, True, False, False, False]
    with pytest.raises(ValueError):
        fd.parse_bool("yes")


# -- iptables -----------------------------------------------------------------
def test_masq_rules_keep_pod_traffic_and_masquerade_egress() -> None:
    pod = IPv4Network("10.244.3.0/24")
    rules = fd.masq_rules(NET, pod, random_fully=True)
    assert rules[0] == fd.Rule("nat", "POSTROUTING", ("-m", "comment", "--comment",
                                                      "flanneld masq", "-j", "FLANNEL-POSTRTG"))
    specs = [" ".join(r.spec) for r in rules[1:]]
    assert all(r.chain == "FLANNEL-POSTRTG" for r in rules[1:])
    returns = [s for s in specs if s.endswith("RETURN")]
    masq = [s for s in specs if "MASQUERADE" in s]
    assert any(s.startswith(f"-s {pod} -d {NET}") for s in returns)
    assert any(s.startswith(f"-s {NET} ! -d 224.0.0.0/4") for s in masq)
    assert all(s.endswith("--random-fully") for s in masq)
    assert specs.index(returns[-1]) < specs.index(masq[0])  # RETURNs come first
    assert not any("--random-fully" in " ".join(r.spec)
                   for r in fd.masq_rules(NET, pod, random_fully=False))


def test_forward_rules_accept_both_directions() -> None:
    rules = fd.forward_rules(NET)
    assert rules[0].chain == "FORWARD" and rules[0].spec[-1] == "FLANNEL-FWD"
    assert {r.spec[:2] for r in rules[1:]} == {("-s", str(NET)), ("-d", str(NET))}


def test_restore_payload_groups_tables_and_quotes_comments() -> None:
    rules = fd.forward_rules(NET)[:1] + fd.masq_rules(NET, IPv4Network("10.244.3.0/24"), False)[:1]
    payload = fd.restore_payload([("-A", r) for r in rules])
    assert payload.count("COMMIT") == 2
    assert '--comment "flanneld forward"' in payload
    assert payload.startswith("*filter\n-A FORWARD")


def test_iptables_version_parse() -> None:
    assert fd.parse_iptables_version("iptables v1.8.9 (nf_tables)") == (1, 8, 9)
    assert fd.parse_iptables_version("iptables v1.6.1") < (1, 6, 2)
    assert fd.parse_iptables_version("garbage") == (0, 0, 0)


def test_klog_header() -> None:
    rec = logging.LogRecord("flanneld", logging.WARNING, "/x/flanneld.py", 12, "hi %s", ("a",),
                            None)
    line = fd.KlogFormatter().format(rec)
    assert re.fullmatch(r"W\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ flanneld\.py:12\] hi a", line)


# -- etcd helpers -------------------------------------------------------------
def test_prefix_end_and_keyvalue_from_gateway_json() -> None:
    assert prefix_end("/coreos.com/network/subnets/") == b"/coreos.com/network/subnets0"
    assert prefix_end(b"a\xff") == b"b"
    kv = KeyValue.from_json({"key": "L2E=", "value": "Yg==", "lease": "7", "mod_revision": "3"})
    assert (kv.key, kv.text, kv.lease, kv.mod_revision) == ("/a", "b", 7, 3)


# -- CNI plugin ---------------------------------------------------------------
SUBNET_ENV = ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"
              "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
CONF = {"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
        "delegate": {"hairpinMode": True, "isDefaultGateway": True}}


def test_cni_subnet_env_parse_masks_subnet() -> None:
    env = cni.parse_subnet_env(SUBNET_ENV)
    assert (env.networks, env.subnet, env.mtu, env.ipmasq) == \
        (["10.244.0.0/16"], "10.244.3.0/24", 1450, True)


def test_cni_subnet_env_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("FLANNEL_SUBNET=10.244.3.1/24\n")
    with pytest.raises(cni.CniError, match=r"is missing FLANNEL_NETWORK.*FLANNEL_MTU.*IPMASQ"):
        cni.load_subnet_env(str(path))
    with pytest.raises(cni.CniError, match="no such file"):
        cni.load_subnet_env(str(tmp_path / "absent"))


def test_cni_delegate_from_subnet_env() -> None:
    delegate = cni.build_delegate(dict(CONF), cni.parse_subnet_env(SUBNET_ENV))
    assert delegate == {
        "cniVersion": "0.3.1", "name": "cbr0", "type": "bridge", "hairpinMode": True,
        "isDefaultGateway": True, "isGateway": True, "ipMasq": False, "mtu": 1450,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/24"}]],
                 "routes": [{"dst": "10.244.0.0/16"}]},
    }
    assert list(json.loads(cni.encode(delegate))) == sorted(delegate)


def test_cni_delegate_honours_overrides_and_ipam_routes() -> None:
    conf = {"name": "n", "ipam": {"routes": [{"dst": "192.168.0.0/16"}]},
            "runtimeConfig": {"portMappings": []},
            "delegate": {"type": "ipvlan", "ipMasq": True, "mtu": 9000}}
    env = cni.parse_subnet_env(SUBNET_ENV.replace("IPMASQ=true", "IPMASQ=false"))
    d = cni.build_delegate(conf, env)
    assert (d["type"], d["ipMasq"], d["mtu"]) == ("ipvlan", True, 9000)
    assert "isGateway" not in d
    assert d["runtimeConfig"] == {"portMappings": []}
    assert d["ipam"]["routes"] == [{"dst": "192.168.0.0/16"}, {"dst": "10.244.0.0/16"}]
    assert cni.build_delegate({"name": "n"}, env)["ipMasq"] is True


@pytest.mark.parametrize("bad", [{"name": "x"}, {"ipam": {}}, {"type": 3}])
def test_cni_rejects_delegate_fields_flannel_owns(bad: dict[str, Any]) -> None:
    with pytest.raises(cni.CniError):
        cni.build_delegate({"name": "n", "delegate": bad}, cni.parse_subnet_env(SUBNET_ENV))


def test_cni_env_and_version_checks() -> None:
    with pytest.raises(cni.CniError, match="CNI_NETNS") as e:
        cni.check_env("ADD", {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/b"})
    assert e.value.code == 4
    cni.check_env("DEL", {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/b"})
    with pytest.raises(cni.CniError, match="containerID"):
        cni.check_env("DEL", {"CNI_CONTAINERID": "../etc", "CNI_IFNAME": "eth0",
                              "CNI_PATH": "/b"})
    with pytest.raises(cni.CniError) as e:
        cni.check_version({"cniVersion": "9.9.9"}, "ADD")
    assert e.value.code == 1
    with pytest.raises(cni.CniError):
        cni.check_version({"cniVersion": "0.3.1"}, "CHECK")
    check_env = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/b"}
    assert cni.dispatch("CHECK", b'{"cniVersion": "1.0.0", "name": "n"}', check_env) == ""
    doc = json.loads(cni.dispatch("VERSION", b"", {}))
    assert "1.0.0" in doc["supportedVersions"] and "0.3.1" in doc["supportedVersions"]


def fake_delegate(bin_dir: Path, rc: int = 0) -> Path:
    """A stand-in `bridge` that records its env and stdin and prints a result."""
    script = bin_dir / "bridge"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "conf = json.load(sys.stdin)\n"
        "rec = os.path.join(os.path.dirname(sys.argv[0]), 'calls.jsonl')\n"
        "open(rec, 'a').write(json.dumps([os.environ['CNI_COMMAND'], conf]) + '\\n')\n"
        f"rc = {rc}\n"
        "print(json.dumps({'code': 11, 'msg': 'boom'} if rc else "
        "{'cniVersion': conf['cniVersion'], 'ips': []}))\n"
        "sys.exit(rc)\n")
    script.chmod(0o755)
    return bin_dir / "calls.jsonl"


def cni_env(tmp_path: Path, cid: str = "pod1") -> dict[str, str]:
    return {"CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
            "CNI_PATH": str(tmp_path / "bin"), "PATH": os.environ.get("PATH", "")}


def test_cni_add_saves_config_delegates_and_del_cleans_up(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    calls = fake_delegate(tmp_path / "bin")
    (tmp_path / "subnet.env").write_text(SUBNET_ENV)
    conf = dict(CONF, subnetFile=str(tmp_path / "subnet.env"), dataDir=str(tmp_path / "data"))
    env = cni_env(tmp_path)
    out = cni.dispatch("ADD", json.dumps(conf).encode(), env)
    assert json.loads(out)["cniVersion"] == "0.3.1"
    saved = tmp_path / "data" / "pod1"
    assert json.loads(saved.read_bytes())["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24"}]]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    cni.dispatch("DEL", json.dumps(conf).encode(), env)
    assert not saved.exists()
    commands = [json.loads(line)[0] for line in calls.read_text().splitlines()]
    assert commands == ["ADD", "DEL"]
    assert cni.dispatch("DEL", json.dumps(conf).encode(), env) == ""  # nothing saved: no-op


def test_cni_delegate_failure_is_passed_up(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    fake_delegate(tmp_path / "bin", rc=1)
    (tmp_path / "subnet.env").write_text(SUBNET_ENV)
    conf = dict(CONF, subnetFile=str(tmp_path / "subnet.env"), dataDir=str(tmp_path / "data"))
    with pytest.raises(cni.CniError) as e:
        cni.dispatch("ADD", json.dumps(conf).encode(), cni_env(tmp_path))
    assert json.loads(e.value.to_json("0.3.1")) == {"code": 11, "msg": "boom"}


def test_cni_missing_delegate_plugin(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "subnet.env").write_text(SUBNET_ENV)
    conf = dict(CONF, subnetFile=str(tmp_path / "subnet.env"), dataDir=str(tmp_path / "data"))
    with pytest.raises(cni.CniError, match='failed to find plugin "bridge"') as e:
        cni.dispatch("ADD", json.dumps(conf).encode(), cni_env(tmp_path))
    err = json.loads(e.value.to_json("0.3.1"))
    assert err["cniVersion"] == "0.3.1" and err["code"] == 999


# -- daemon loop pieces (no etcd, no netlink) -----------------------------------
class FakeRegistry(FakeStore):
    """FakeStore plus the failure switch the daemon's renew path needs."""

    def __init__(self, leases: list[fd.Lease]) -> None:
        super().__init__(leases)
        self.fail = False

    def update(self, subnet: IPv4Network, attrs: fd.LeaseAttrs, ttl: int,
               old_lease: int = 0) -> fd.Lease:
        if self.fail:
            raise EtcdError("etcd down")
        return super().update(subnet, attrs, ttl, old_lease)


def daemon(leases: list[fd.Lease]) -> tuple[fd.Flanneld, FakeRegistry]:
    d = fd.Flanneld(fd.parse_options(["--etcd-endpoints=http://192.0.2.1:2379"], {}))
    reg = FakeRegistry(leases)
    d.registry = reg  # type: ignore[assignment]
    return d, reg


def test_lease_is_renewed_margin_minutes_before_expiry() -> None:
    own = fd.Lease(IPv4Network("10.244.1.0/24"), attrs_for("172.18.0.3"), 5)
    d, reg = daemon([own])
    d.lease, d.renew_at = own, 0.0
    d.maybe_renew()
    assert reg.calls == [("update", (own.subnet, 5, 24 * 3600))]
    assert d.lease is not None and d.lease.lease_id != 5
    left = d.renew_at - time.monotonic()
    assert 23 * 3600 - 5 < left <= 23 * 3600  # default margin: 60 minutes
    reg.calls.clear()
    d.maybe_renew()  # not due yet
    assert reg.calls == []


def test_failed_renewal_is_retried_a_minute_later() -> None:
    own = fd.Lease(IPv4Network("10.244.1.0/24"), attrs_for("172.18.0.3"), 5)
    d, reg = daemon([own])
    d.lease, d.renew_at, reg.fail = own, 0.0, True
    d.maybe_renew()
    assert 55 < d.renew_at - time.monotonic() <= 60
    assert d.lease == own


def test_sync_programs_peers_and_stops_when_our_lease_is_revoked() -> None:
    own = fd.Lease(IPv4Network("10.244.1.0/24"), attrs_for("172.18.0.3"), 5)
    peer = fd.Lease(IPv4Network("10.244.2.0/24"), attrs_for("172.18.0.4"), 6)
    d, reg = daemon([own, peer])
    be = RecordingBackend()
    assert d.sync(be, own.subnet) is not None
    assert be.log == [("add", "10.244.2.0/24")] and not d.stop.is_set()
    reg.data.pop(own.subnet)
    d.sync(be, own.subnet)
    assert d.stop.is_set()
