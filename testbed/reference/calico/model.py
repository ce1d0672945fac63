"""libcalico-go's etcd v3 layout: key names, resource JSON and workload-endpoint names.

Standard library only: the CNI plugins bundle this module (see cni.py), so it must not pull
pyroute2 or anything else a bare node lacks.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import uuid
from typing import Any

API_VERSION = "projectcalico.org/v3"
RESOURCES = "/calico/resources/v3/projectcalico.org"
IPAM = "/calico/ipam/v2"
IPAM_CONFIG_KEY = f"{IPAM}/config"

DEFAULT_POOL_NAME = "default-ipv4-ippool"
DEFAULT_POOL_CIDR = "192.168.0.0/16"
DEFAULT_BLOCK_SIZE = 26
DEFAULT_AS_NUMBER = 64512
DEFAULT_NAMESPACE = "default"  # every non-k8s workload endpoint lives here
VXLAN_HANDLE_PREFIX = "vxlan-tunnel-addr-"
ORCHESTRATOR_CNI = "cni"

# Kind -> plural used in the key (libcalico-go's resourceInfo table).
PLURALS = {
    "Node": "nodes",
    "IPPool": "ippools",
    "ClusterInformation": "clusterinformations",
    "FelixConfiguration": "felixconfigurations",
    "BGPConfiguration": "bgpconfigurations",
    "BGPPeer": "bgppeers",
    "Profile": "profiles",
    "WorkloadEndpoint": "workloadendpoints",
    "NetworkPolicy": "networkpolicies",
    "GlobalNetworkPolicy": "globalnetworkpolicies",
}
NAMESPACED = {"WorkloadEndpoint", "NetworkPolicy"}


def dumps(doc: object) -> str:
    """Compact JSON, as Go's json.Marshal writes values into etcd."""
    return json.dumps(doc, separators=(",", ":"))


# --- keys -------------------------------------------------------------------------------------

def resource_key(kind: str, name: str, namespace: str = "") -> str:
    """`/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`."""
    plural = PLURALS[kind]
    if kind in NAMESPACED:
        return f"{RESOURCES}/{plural}/{namespace or DEFAULT_NAMESPACE}/{name}"
    return f"{RESOURCES}/{plural}/{name}"


def resource_prefix(kind: str, namespace: str = "") -> str:
    """The prefix that lists every resource of a kind (in one namespace, if given)."""
    prefix = f"{RESOURCES}/{PLURALS[kind]}/"
    return f"{prefix}{namespace}/" if namespace else prefix


def cidr_part(cidr: str) -> str:
    """`192.168.3.64/26` -> `192.168.3.64-26`, as block keys spell a CIDR."""
    return str(ipaddress.ip_network(cidr)).replace("/", "-", 1)


def cidr_from_part(part: str) -> str:
    """The inverse of cidr_part."""
    return str(ipaddress.ip_network(part.replace("-", "/", 1)))


def block_key(cidr: str) -> str:
    """`/calico/ipam/v2/assignment/ipv4/block/<cidr with - for />`."""
    net = ipaddress.ip_network(cidr)
    return f"{IPAM}/assignment/ipv{net.version}/block/{cidr_part(cidr)}"


def affinity_prefix(host: str, version: int = 4) -> str:
    """Every block affinity of one host."""
    return f"{IPAM}/host/{host}/ipv{version}/block/"


def affinity_key(host: str, cidr: str) -> str:
    """`/calico/ipam/v2/host/<node>/ipv4/block/<cidr with - for />`."""
    net = ipaddress.ip_network(cidr)
    return f"{affinity_prefix(host, net.version)}{cidr_part(cidr)}"


def handle_key(handle_id: str) -> str:
    """`/calico/ipam/v2/handle/<id>`."""
    return f"{IPAM}/handle/{handle_id}"


def handle_id(network: str, container_id: str) -> str:
    """The CNI plugin's IPAM handle: `<network name>.<container id>`."""
    return f"{network}.{container_id}"


# --- names ------------------------------------------------------------------------------------

def escape_dashes(value: str) -> str:
    """A name segment with every `-` doubled (segments may not start or end with one)."""
    if not value or value[0] == "-" or value[-1] == "-":
        raise ValueError(f"name segment {value!r} is empty or starts/ends with '-'")
    return value.replace("-", "--")


def wep_name(node: str, container_id: str, endpoint: str) -> str:
    """`<node>-cni-<containerID>-<endpoint>` with dashes escaped (orchestrator "cni")."""
    parts = (node, ORCHESTRATOR_CNI, container_id, endpoint)
    return "-".join(escape_dashes(p) for p in parts)


def wep_prefix(node: str, container_id: str) -> str:
    """The name prefix that finds an endpoint of this container whatever its interface."""
    return "-".join(escape_dashes(p) for p in (node, ORCHESTRATOR_CNI, container_id)) + "-"


def host_veth_name(container_id: str) -> str:
    """`cali` + the first 11 characters of the container id."""
    return "cali" + container_id[:11]


# --- time -------------------------------------------------------------------------------------

def now() -> dt.datetime:
    """The current UTC time."""
    return dt.datetime.now(dt.UTC)


def rfc3339(when: dt.datetime | None = None) -> str:
    """metav1.Time's JSON form: `2024-05-01T12:00:00Z`."""
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_time(when: dt.datetime | None = None) -> str:
    """Go's time.Time.String() of a UTC time, as IPAM stores allocation timestamps."""
    t = when or now()
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond * 1000:09d}" + " +0000 UTC"


# --- resources --------------------------------------------------------------------------------

def resource(kind: str, name: str, spec: dict[str, Any], *, namespace: str = "",
             labels: dict[str, str] | None = None, uid: str = "",
             created: str = "") -> dict[str, Any]:
    """A v3 resource as the etcdv3 backend serialises it (metadata without resourceVersion)."""
    meta: dict[str, Any] = {"name": name}
    if kind in NAMESPACED:
        meta["namespace"] = namespace or DEFAULT_NAMESPACE
    meta["uid"] = uid or str(uuid.uuid4())
    meta["creationTimestamp"] = created or rfc3339()
    if labels:
        meta["labels"] = dict(labels)
    return {"kind": kind, "apiVersion": API_VERSION, "metadata": meta, "spec": spec}


def ip_pool_spec(cidr: str, *, block_size: int = DEFAULT_BLOCK_SIZE, ipip: str = "Never",
                 vxlan: str = "Never", nat_outgoing: bool = True) -> dict[str, Any]:
    """An IPPool spec after clientv3's defaulting (nodeSelector, allowedUses, assignmentMode)."""
    spec: dict[str, Any] = {
        "cidr": str(ipaddress.ip_network(cidr)),
        "vxlanMode": vxlan,
        "ipipMode": ipip,
        "natOutgoing": nat_outgoing,
        "blockSize": block_size,
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }
    if not nat_outgoing:
        del spec["natOutgoing"]  # omitempty
    return spec


def pool_mode(value: str) -> str:
    """CALICO_IPV4POOL_IPIP / _VXLAN env values -> the pool's mode names."""
    v = value.strip().lower()
    if v in ("", "off", "never"):
        return "Never"
    if v in ("crosssubnet", "cross-subnet"):
        return "CrossSubnet"
    if v == "always":
        return "Always"
    raise ValueError(f"unrecognised encapsulation mode {value!r}")


def profile_spec(network: str, *, allow_all_ingress: bool) -> dict[str, Any]:
    """The profile the CNI plugin creates for a network (or the allow-all one k8s would use)."""
    ingress: list[dict[str, Any]] = [{"action": "Allow"}]
    if not allow_all_ingress:
        ingress = [{"action": "Allow", "source": {"selector": f"has({network})"}}]
    return {"ingress": ingress, "egress": [{"action": "Allow"}],
            "labelsToApply": {network: ""}}


def wep_labels(namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    """Labels clientv3 stamps on every workload endpoint it creates."""
    return {"projectcalico.org/namespace": namespace,
            "projectcalico.org/orchestrator": ORCHESTRATOR_CNI}


def parse_cidr_ip(value: str) -> tuple[str, int]:
    """`172.18.0.3/16` -> ("172.18.0.3", 16); a bare address gets its full length."""
    iface = ipaddress.ip_interface(value)
    return str(iface.ip), iface.network.prefixlen
