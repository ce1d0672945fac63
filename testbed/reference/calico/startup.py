"""`calico-node -startup` and `-allocate-tunnel-addrs`: node/pkg/lifecycle/startup, in Python.

Start-up detects the node's IP (IP=autodetect with IP_AUTODETECTION_METHOD), writes the Node
resource (spec.bgp.ipv4Address, spec.interfaces), creates the default IPPool from the
CALICO_IPV4POOL_* variables, ClusterInformation (datastoreReady), the default and per-node
FelixConfiguration, the default BGPConfiguration and IPAM config, and finally
/var/lib/calico/nodename -- the file the CNI plugin waits for.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from testbed.reference.calico import UPSTREAM_VERSION, ipam, model
from testbed.reference.etcdv3 import Etcd, EtcdError, KeyValue

NODENAME_FILE = "/var/lib/calico/nodename"
CALICO_DIRS = ("/var/run/calico", "/var/lib/calico", "/var/log/calico")
# autodetection.DEFAULT_INTERFACES_TO_EXCLUDE
EXCLUDED_INTERFACES = (
    "docker.*", "cbr.*", "dummy.*", "virbr.*", "lxcbr.*", "veth.*", "lo", "cali.*", "tunl.*",
    "flannel.*", "kube-ipvs.*", "cni.*", "vxlan.calico.*", "vxlan-v6.calico.*",
    "wireguard.cali.*", "wg-v6.cali.*", "nodelocaldns.*", "podman.*",
)
CALICO_VERSION = f"{UPSTREAM_VERSION}-testbed-reference"


class StartupError(Exception):
    """Start-up cannot continue (calico-node exits 1, the container restarts)."""


def log(msg: str, level: str = "INFO") -> None:
    """Start-up log line on stdout."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{level}][{os.getpid()}] startup {msg}",
          flush=True)


def determine_node_name(env: dict[str, str]) -> str:
    """utils.DetermineNodeName: NODENAME, then HOSTNAME, then the OS hostname (lowercased)."""
    name = env.get("NODENAME") or env.get("HOSTNAME") or socket.gethostname()
    return name.strip().lower()


@dataclass(frozen=True)
class Interface:
    """A host interface and its IPv4 addresses (CIDR form)."""

    name: str
    cidrs: tuple[str, ...]


def host_interfaces() -> list[Interface]:
    """Every interface with its IPv4 addresses, via netlink (pyroute2)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        cidrs: dict[int, list[str]] = {i: [] for i in names}
        for addr in ipr.get_addr(family=socket.AF_INET):
            cidrs.setdefault(addr["index"], []).append(
                f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
    return [Interface(names[i], tuple(cidrs.get(i, ()))) for i in sorted(names)]


def filter_interfaces(ifaces: list[Interface], include: list[str],
                      exclude: list[str]) -> list[Interface]:
    """autodetection.GetInterfaces: include regexes (all if empty) minus exclude regexes."""
    out = []
    for i in ifaces:
        if include and not any(re.match(p, i.name) for p in include):
            continue
        if any(re.fullmatch(p, i.name) for p in exclude):
            continue
        out.append(i)
    return out


def autodetect(method: str, ifaces: list[Interface]) -> str | None:
    """An IPv4 CIDR by IP_AUTODETECTION_METHOD (first-found, interface=, skip-interface=,
    cidr=, can-reach=)."""
    method = method.strip() or "first-found"
    candidates = filter_interfaces(ifaces, [], list(EXCLUDED_INTERFACES))
    if method.startswith("interface="):
        pats = [p for p in method.split("=", 1)[1].split(",") if p]
        candidates = filter_interfaces(ifaces, pats, list(EXCLUDED_INTERFACES))
    elif method.startswith("skip-interface="):
        pats = [p for p in method.split("=", 1)[1].split(",") if p]
        candidates = filter_interfaces(candidates, [], pats)
    elif method.startswith("cidr="):
        nets = [ipaddress.ip_network(c, strict=False) for c in method.split("=", 1)[1].split(",")]
        for i in candidates:
            for c in i.cidrs:
                if any(ipaddress.ip_interface(c).ip in n for n in nets):
                    return c
        return None
    elif method.startswith("can-reach="):
        dest = method.split("=", 1)[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(dest), 80))
            local = s.getsockname()[0]
        for i in ifaces:
            for c in i.cidrs:
                if str(ipaddress.ip_interface(c).ip) == local:
                    return c
        return f"{local}/32"
    elif method != "first-found":
        raise StartupError(f"invalid IP autodetection method: {method}")
    for i in candidates:
        for c in i.cidrs:
            if not ipaddress.ip_interface(c).ip.is_loopback:
                return c
    return None


def _get(etcd: Etcd, key: str) -> tuple[dict[str, Any] | None, int]:
    kv: KeyValue | None = etcd.get(key)
    return (json.loads(kv.value), kv.mod_revision) if kv else (None, 0)


def create_if_absent(etcd: Etcd, kind: str, name: str, spec: dict[str, Any]) -> bool:
    """clientv3 Create; an existing resource is left alone (ErrorResourceAlreadyExists)."""
    key = model.resource_key(kind, name)
    return ipam.put_if(etcd, key, model.dumps(model.resource(kind, name, spec)), 0)


def configure_node(etcd: Etcd, name: str, env: dict[str, str],
                   ifaces: list[Interface]) -> dict[str, Any]:
    """The Node resource with this node's BGP address and interfaces (created or updated)."""
    key = model.resource_key("Node", name)
    node, rev = _get(etcd, key)
    if node is None:
        log(f"Building new node resource Name={name!r}")
        node = model.resource("Node", name, {})
        node["status"] = {}
    spec = node.setdefault("spec", {})
    bgp = spec.setdefault("bgp", {})
    ip_env = env.get("IP", "")
    if ip_env == "autodetect" or (ip_env == "" and not bgp.get("ipv4Address")):
        cidr = autodetect(env.get("IP_AUTODETECTION_METHOD", ""), ifaces)
        if cidr is None and not bgp.get("ipv4Address"):
            raise StartupError("Couldn't autodetect an IPv4 address. If auto-detecting, choose "
                               "a different autodetection method. Otherwise provide an "
                               "explicit address.")
        if cidr:
            bgp["ipv4Address"] = cidr
            log(f"Autodetected IPv4 address {cidr}")
    elif ip_env not in ("", "none"):
        local = next((c for i in ifaces for c in i.cidrs
                      if str(ipaddress.ip_interface(c).ip) == ip_env.split("/")[0]), None)
        bgp["ipv4Address"] = local or str(ipaddress.ip_interface(ip_env))
    if env.get("AS"):
        bgp["asNumber"] = int(env["AS"])
    if env.get("IP") not in (None, "", "none"):
        listed = filter_interfaces(ifaces, [], list(EXCLUDED_INTERFACES))
        spec["interfaces"] = [
            {"name": i.name, "addresses": [str(ipaddress.ip_interface(c).ip) for c in i.cidrs]}
            for i in sorted(listed, key=lambda i: i.name) if i.cidrs]
    check_conflicts(etcd, name, bgp.get("ipv4Address", ""))
    if not ipam.put_if(etcd, key, model.dumps(node), rev):
        raise StartupError(f"Unable to set node resource configuration: conflict on {key}")
    return node


def check_conflicts(etcd: Etcd, name: str, cidr: str) -> None:
    """Another Node with the same IPv4 address is an error (DISABLE_NODE_IP_CHECK skips)."""
    if not cidr or os.environ.get("DISABLE_NODE_IP_CHECK") == "true":
        return
    ours = str(ipaddress.ip_interface(cidr).ip)
    kvs, _ = etcd.get_prefix(model.resource_prefix("Node"))
    for kv in kvs:
        other = json.loads(kv.value)
        theirs = (other.get("spec", {}).get("bgp") or {}).get("ipv4Address", "")
        if other["metadata"]["name"] != name and theirs and \
                str(ipaddress.ip_interface(theirs).ip) == ours:
            raise StartupError(f"Calico node '{other['metadata']['name']}' is already using "
                               f"the IPv4 address {ours}.")


def configure_ip_pools(etcd: Etcd, env: dict[str, str]) -> None:
    """The default IPv4 pool from CALICO_IPV4POOL_*, unless any IPv4 pool exists."""
    cidr = env.get("CALICO_IPV4POOL_CIDR", "")
    if env.get("NO_DEFAULT_POOLS", "").lower() == "true":
        if cidr:
            raise StartupError("Invalid configuration with NO_DEFAULT_POOLS defined and "
                               "CALICO_IPV4POOL_CIDR defined.")
        log("Skipping IP pool configuration")
        return
    if cidr == "none":
        return
    block = int(env.get("CALICO_IPV4POOL_BLOCK_SIZE") or model.DEFAULT_BLOCK_SIZE)
    if not 20 <= block <= 32:
        raise StartupError(f"Invalid blocksize {block} for version 4")
    try:
        net = ipaddress.ip_network(cidr or model.DEFAULT_POOL_CIDR)
        ipip = model.pool_mode(env.get("CALICO_IPV4POOL_IPIP", ""))
        vxlan = model.pool_mode(env.get("CALICO_IPV4POOL_VXLAN", ""))
    except ValueError as e:
        raise StartupError(f"Invalid IPv4 pool configuration: {e}") from e
    if net.version != 4:
        raise StartupError(f"Invalid CIDR specified in CALICO_IPV4POOL_CIDR '{cidr}'")
    if ipam.list_pools(etcd):
        return
    nat = env.get("CALICO_IPV4POOL_NAT_OUTGOING", "true").lower() not in (
        "false", "0", "no", "n", "f")
    spec = model.ip_pool_spec(str(net), block_size=block, ipip=ipip, vxlan=vxlan,
                              nat_outgoing=nat)
    if create_if_absent(etcd, "IPPool", model.DEFAULT_POOL_NAME, spec):
        log(f"Created default IPv4 pool ({net}) with NAT outgoing {str(nat).lower()}. "
            f"IPIP mode: {ipip}, VXLAN mode: {vxlan}")


def ensure_default_config(etcd: Etcd, name: str, env: dict[str, str]) -> None:
    """ClusterInformation, FelixConfigurations, BGPConfiguration and IPAM config defaults."""
    key = model.resource_key("ClusterInformation", "default")
    info, rev = _get(etcd, key)
    if info is None:
        info = model.resource("ClusterInformation", "default", {
            "clusterGUID": uuid.uuid4().hex, "clusterType": env.get("CLUSTER_TYPE", ""),
            "calicoVersion": CALICO_VERSION, "datastoreReady": True})
        if not env.get("CLUSTER_TYPE"):
            del info["spec"]["clusterType"]
        ipam.put_if(etcd, key, model.dumps(info), 0)
    elif info.get("spec", {}).get("datastoreReady") is None:
        info["spec"]["datastoreReady"] = True
        ipam.put_if(etcd, key, model.dumps(info), rev)
    create_if_absent(etcd, "FelixConfiguration", "default",
                     {"reportingInterval": "0s", "logSeverityScreen": "Info"})
    create_if_absent(etcd, "FelixConfiguration", f"node.{name}",
                     {"defaultEndpointToHostAction": "Return"})
    create_if_absent(etcd, "BGPConfiguration", "default", {})
    ipam.put_if(etcd, model.IPAM_CONFIG_KEY, model.dumps({"auto_allocate_blocks": True}), 0)


def wait_for_datastore(etcd: Etcd) -> None:
    """WAIT_FOR_DATASTORE=true: retry until etcd answers."""
    while True:
        try:
            etcd.get(model.resource_key("Node", "foo"))
            return
        except EtcdError as e:
            log(f"Hit error connecting to datastore - retry: {e}")
            time.sleep(1)


def run(env: dict[str, str] | None = None) -> int:
    """Startup.Run; returns the process exit code."""
    e = dict(os.environ if env is None else env)
    name = determine_node_name(e)
    log(f"Starting node {name} with version {CALICO_VERSION}")
    etcd = Etcd(e.get("ETCD_ENDPOINTS", "http://127.0.0.1:2379"))
    try:
        if e.get("WAIT_FOR_DATASTORE") == "true":
            wait_for_datastore(etcd)
        if e.get("CALICO_NETWORKING_BACKEND") != "none":
            configure_node(etcd, name, e, host_interfaces())
        for d in CALICO_DIRS:
            os.makedirs(d, exist_ok=True)
        configure_ip_pools(etcd, e)
        ensure_default_config(etcd, name, e)
    except (StartupError, EtcdError) as err:
        log(str(err), "ERROR")
        return 1
    with open(NODENAME_FILE, "w") as f:
        f.write(name)
    log(f"Using node name: {name}")
    return 0


def allocate_tunnel_addrs(env: dict[str, str] | None = None) -> int:
    """`-allocate-tunnel-addrs -allocate-tunnel-addrs-run-once`: the node's VXLAN address.

    With a VXLAN pool, assign (or keep) one address from the node's block under handle
    `vxlan-tunnel-addr-<node>` (attribute type vxlanTunnelAddress) and record it as
    spec.ipv4VXLANTunnelAddr; without one, release it and clear the field.
    """
    e = dict(os.environ if env is None else env)
    name = determine_node_name(e)
    etcd = Etcd(e.get("ETCD_ENDPOINTS", "http://127.0.0.1:2379"))
    handle = model.VXLAN_HANDLE_PREFIX + name
    client = ipam.Ipam(etcd, name)
    try:
        pools = [p for p in ipam.list_pools(etcd) if p.vxlan_mode != "Never" and not p.disabled]
        for _ in range(ipam.CAS_RETRIES):
            key = model.resource_key("Node", name)
            node, rev = _get(etcd, key)
            if node is None:
                raise StartupError(f"Node {name} does not exist")
            spec = node.setdefault("spec", {})
            have = client.ips_by_handle(handle)
            if pools:
                if have and spec.get("ipv4VXLANTunnelAddr") == have[0]:
                    return 0
                if not have:
                    cidr = client.auto_assign(handle, {"node": name,
                                                       "type": "vxlanTunnelAddress"},
                                              use="Tunnel", pools=pools)
                    have = [cidr.split("/")[0]]
                spec["ipv4VXLANTunnelAddr"] = have[0]
            else:
                if have:
                    client.release_by_handle(handle)
                if "ipv4VXLANTunnelAddr" not in spec:
                    return 0
                del spec["ipv4VXLANTunnelAddr"]
            if ipam.put_if(etcd, key, model.dumps(node), rev):
                log(f"Assigned VXLAN tunnel address {spec.get('ipv4VXLANTunnelAddr', '-')}")
                return 0
        raise StartupError("conflicts updating the node's tunnel address")
    except (StartupError, ipam.IpamError, EtcdError) as err:
        log(str(err), "ERROR")
        return 1
