"""Calico: calico/node per node with an etcd datastore (`calicoctl node run`), calico CNI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.cluster.etcd import ClusterEtcd
from testbed.cni.base import ClusterRef, Cni, NodeRef
from testbed.constants import LABEL_NODE, NODE_SECURITY_OPT
from testbed.errors import StepError, UserError
from testbed.images.catalog import ImageSpec
from testbed.images.gobuild import GoSource
from testbed.networks import POD_NETWORKS
from testbed.provider.base import ContainerSpec, Provider
from testbed.scenario import NetworkPolicy, PolicyPort, Scenario

NETWORK_NAME = "k8s-pod-network"  # install.go's default; also the profile the plugin uses
DEFAULT_POOL_CIDR = POD_NETWORKS["calico"][0]
BLOCK_SIZE = 26
VXLAN_VNI = 4096
VXLAN_PORT = 4789
BIRD_SOCKET = "/var/run/calico/bird.ctl"
RESOURCES = "/calico/resources/v3/projectcalico.org"
NAMESPACE = "default"  # where the plugin puts every "cni" orchestrator endpoint
MODULE = "github.com/projectcalico/calico"
API_MODULE = "github.com/projectcalico/api"
DEFAULT_RELEASE = "v3.31.0"
# Calico's root module has no /v3 suffix, so its v3.x tags are not module versions: a release
# is its tag's commit as a pseudo-version, with the api module (replaced by ./api upstream) at
# the matching projectcalico/api commit. Only releases the module proxy here serves are listed
# (v3.31.1-v3.31.7 and v3.32.x are not served; v3.31.0 is the newest that is).
RELEASES: dict[str, tuple[str, str]] = {
    "v3.31.0": ("v0.0.0-20251021213802-b1f3c43f8437", "v0.0.0-20251022175904-f2ab03771208"),
}
BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close")


def calico_source(release: str, module: str = MODULE) -> GoSource:
    """calico-node and the calico CNI plugin + installer, CGO off (the BPF dataplane's cgo
    parts drop out; iptables mode stays), with calico/node's filesystem and confd templates."""
    if release not in RELEASES:
        raise UserError(f"calico {release} is not a release the module proxy serves here: "
                        f"choose one of {', '.join(RELEASES)}")
    version, api = RELEASES[release]
    return GoSource(
        name="calico", module=module, version=version, release=release,
        binaries=(("node/cmd/calico-node", "calico-node"), ("cni-plugin/cmd/calico", "calico"),
                  ("cni-plugin/cmd/install", "install")),
        ldflags=(f"-s -w -X {MODULE}/pkg/buildinfo.Version={{release}} "
                 f"-X {MODULE}/pkg/buildinfo.GitRevision={{revision}}"),
        requires=((API_MODULE, api), (f"{MODULE}/lib/std", version)),
        unused_modules=(f"{MODULE}/lib/httpmachinery",),
        # lib/std is not in the checksum database; the api module's entry is answered only
        # now and then here: both are verified against the go.sum the build writes.
        nosumdb=(f"{MODULE}/lib/std", API_MODULE),
        files=(("node/filesystem", "node-filesystem"), ("confd/etc/calico/confd", "confd")),
    )


def _dumps(doc: object) -> str:
    """Compact JSON, as Go's json.Marshal writes it."""
    return json.dumps(doc, separators=(",", ":"))


def host_has_modules() -> bool:
    """calicoctl mounts the host's /lib/modules read-only; skip it where the host has none
    (a bind of a missing path would make the engine create it on the host)."""
    return Path("/lib/modules").is_dir()


def parse_bird_protocols(text: str) -> list[dict[str, str]]:
    """BGP sessions from `birdcl show protocols` (BIRD 1.6 and 2 print the same columns)."""
    peers = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[1] != "BGP":
            continue
        at = next((i for i, p in enumerate(parts) if p in BGP_STATES), len(parts))
        # "state" is the BGP session state (Established, Active, ...), as `calicoctl node
        # status` reports it; BIRD's own protocol state (up, start) stays in proto_state.
        peers.append({"name": parts[0], "state": parts[at] if at < len(parts) else parts[3],
                      "proto_state": parts[3], "since": " ".join(parts[4:at]),
                      "info": " ".join(parts[at:])})
    return peers


def _selector(labels: dict[str, str]) -> str:
    """matchLabels -> a Calico selector (kube-controllers' conversion, minus its
    `projectcalico.org/orchestrator == 'k8s'` term: these endpoints are orchestrator "cni")."""
    return " && ".join(f"{k} == '{v}'" for k, v in sorted(labels.items())) or "all()"


def wep_name(node: str, container_id: str, endpoint: str = "eth0") -> str:
    """The WorkloadEndpoint the plugin writes: `<node>-cni-<container id>-<endpoint>`."""
    return "-".join(p.replace("-", "--") for p in (node, "cni", container_id, endpoint))


def network_policy(pol: NetworkPolicy) -> dict[str, Any]:
    """A Kubernetes NetworkPolicy as kube-controllers writes it for Calico (knp.default.*)."""
    ingress = []
    for rule in pol.ingress:
        peers = [{"selector": _selector(peer.pod_selector.match_labels)} for peer in rule.from_]
        ports: list[PolicyPort | None] = list(rule.ports) or [None]
        for source in peers or [{}]:
            for port in ports:
                r: dict[str, Any] = {"action": "Allow"}
                if port is not None:
                    r["protocol"] = port.protocol
                    r["destination"] = {"ports": [port.port]}
                if source:
                    r["source"] = source
                ingress.append(r)
    return {
        "kind": "NetworkPolicy", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": f"knp.default.{pol.name}", "namespace": NAMESPACE},
        "spec": {"order": 1000, "selector": _selector(pol.pod_selector.match_labels),
                 "types": list(pol.policy_types), "ingress": ingress},
    }


class Calico(Cni):
    """calico/node as `calicoctl node run` starts it, and calico/cni's install container."""

    name = "calico"
    backends = ("bgp", "vxlan")
    default_backend = "bgp"
    datapaths = {"bgp": "routed, no encapsulation (BIRD BGP routes, felix iptables)",
                 "vxlan": "VXLAN encapsulation in the kernel (felix-managed, 50 B overhead)"}
    module = MODULE
    default_release = DEFAULT_RELEASE
    node_volumes = {
        "cni-bin": "/opt/cni/bin",
        "cni-net": "/etc/cni/net.d",
        "calico-lib": "/var/lib/calico",
        "calico-run": "/var/run/calico",
        "calico-log": "/var/log/calico",
    }
    # calico/node's start-up writes nodename; felix writes mtu once it has a dataplane.
    ready_files = ("/var/lib/calico/nodename", "/var/lib/calico/mtu")
    has_ready_check = True
    conflist_name = "10-calico.conflist"
    default_pod_cidr = DEFAULT_POOL_CIDR
    enforces_policy = True

    def upstream_images(self, release: str) -> dict[str, str]:
        """The published calico/node and calico/cni images of this release."""
        return {"node": f"quay.io/calico/node:{release}", "cni": f"quay.io/calico/cni:{release}"}

    def source_images(self, release: str, module: str) -> dict[str, ImageSpec]:
        """calico/node and calico/cni built here, in upstream's image layout."""
        src = calico_source(release, module)
        return {"node": ImageSpec(name="calico-node", role="cni", cni=self.name, go=(src,)),
                "cni": ImageSpec(name="calico-cni", role="cni", cni=self.name, go=(src,))}

    def pool_cidr(self, cluster: ClusterRef) -> str:
        """The default IPPool's CIDR (scenario pod_cidr, else calico/node's default)."""
        return str(cluster.options.get("pod_cidr") or DEFAULT_POOL_CIDR)

    def datastore_keys(self, cluster: ClusterRef) -> dict[str, str]:
        """The network's profile, allow-all as Kubernetes' namespace profiles are.

        Without it the plugin would create the "cni" orchestrator's profile, which admits
        ingress only from endpoints of the same network (selector has(<network>)): node and
        NodePort traffic to pods would be dropped, unlike on a Kubernetes cluster. The
        plugin never updates an existing profile, so writing it first keeps pods open.
        """
        profile = {
            "kind": "Profile", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": NETWORK_NAME,
                         "uid": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                               f"testbed/{cluster.name}/profile"))},
            "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                     "labelsToApply": {NETWORK_NAME: ""}},
        }
        return {f"{RESOURCES}/profiles/{NETWORK_NAME}": _dumps(profile)}

    def install_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """calico/cni's install-cni init container: /opt/cni/bin/install with SLEEP=false."""
        return [ContainerSpec(
            name=f"{node.name}-install-calico-cni",
            image=cluster.images["cni"],
            cluster=cluster.name, role="cni",
            labels={LABEL_NODE: node.name},
            entrypoint=["/opt/cni/bin/install"],
            env={
                "CNI_CONF_NAME": self.conflist_name,
                "CNI_NETWORK_CONFIG": _dumps(self.conflist(cluster, node)),
                "KUBERNETES_NODE_NAME": node.name,
                "DATASTORE_TYPE": "etcdv3",
                "ETCD_ENDPOINTS": cluster.etcd_endpoint,
                "SLEEP": "false",
            },
            network_mode="none",
            volumes={node.volumes["cni-bin"]: "/host/opt/cni/bin",
                     node.volumes["cni-net"]: "/host/etc/cni/net.d"},
        )]

    def node_env(self, cluster: ClusterRef, node: NodeRef) -> dict[str, str]:
        """calico/node's environment for an etcd datastore without Kubernetes."""
        vxlan = cluster.backend == "vxlan"
        env = {
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": cluster.etcd_endpoint,
            "NODENAME": node.name,
            "IP": "autodetect",
            "IP_AUTODETECTION_METHOD": "interface=eth0",
            "CALICO_NETWORKING_BACKEND": "vxlan" if vxlan else "bird",
            "CALICO_IPV4POOL_CIDR": self.pool_cidr(cluster),
            "CALICO_IPV4POOL_BLOCK_SIZE": str(BLOCK_SIZE),
            # No ipip module in this kernel: BGP without encapsulation, or VXLAN.
            "CALICO_IPV4POOL_IPIP": "Never",
            "CALICO_IPV4POOL_VXLAN": "Always" if vxlan else "Never",
            "CALICO_IPV4POOL_NAT_OUTGOING": "true",
            "CALICO_MANAGE_CNI": "false",
            "CALICO_DISABLE_FILE_LOGGING": "true",
            # Debian's iptables (in the node image) is the nf_tables variant.
            "FELIX_IPTABLESBACKEND": "NFT",
            "FELIX_DEFAULTENDPOINTTOHOSTACTION": "ACCEPT",
            "FELIX_IPV6SUPPORT": "false",
            "FELIX_HEALTHENABLED": "true",
            "FELIX_LOGSEVERITYSCREEN": "info",
            # Felix in iptables mode clears leftover BPF connect-time load balancing at start
            # through libbpf; the source build is CGO-free (libbpf is a C library the module
            # proxy cannot serve), whose libbpf stub panics there. Upstream's own switch for
            # skipping that clean-up: a fresh node has no BPF state to clear.
            "FELIX_DebugSkipCTLBCleanup": "true",
        }
        if vxlan:
            env |= {"FELIX_VXLANVNI": str(VXLAN_VNI), "FELIX_VXLANPORT": str(VXLAN_PORT)}
            if cluster.options.get("mtu"):
                env["FELIX_VXLANMTU"] = str(cluster.options["mtu"])
        return env

    def daemon_specs(self, cluster: ClusterRef, node: NodeRef) -> list[ContainerSpec]:
        """calico/node in the node's network namespace, its state dirs shared with the node."""
        return [ContainerSpec(
            name=f"{node.name}-calico-node",
            image=cluster.images["node"],
            cluster=cluster.name, role="cni",
            labels={LABEL_NODE: node.name},
            command=["start_runit"],
            env=self.node_env(cluster, node),
            network_mode=f"container:{node.name}",
            volumes={node.volumes["calico-run"]: "/var/run/calico",
                     node.volumes["calico-lib"]: "/var/lib/calico",
                     node.volumes["calico-log"]: "/var/log/calico"},
            binds={"/lib/modules": "/lib/modules"} if host_has_modules() else {},
            # calicoctl runs it --privileged; explicit capabilities instead: netlink, raw
            # sockets, and SYS_ADMIN to make /proc/sys writable for felix's sysctls.
            cap_add=["NET_ADMIN", "NET_RAW", "SYS_ADMIN"],
            security_opt=list(NODE_SECURITY_OPT),
            restart="on-failure",
        )]

    def conflist(self, cluster: ClusterRef, node: NodeRef) -> dict[str, Any]:
        """The orchestrator-less calico conflist (etcdv3, nodename, calico-ipam) + portmap."""
        return {
            "name": NETWORK_NAME,
            "cniVersion": "0.3.1",
            "plugins": [
                {"type": "calico",
                 "datastore_type": "etcdv3",
                 "etcd_endpoints": cluster.etcd_endpoint,
                 "nodename": node.name,
                 "mtu": int(cluster.options.get("mtu") or 0),
                 "ipam": {"type": "calico-ipam", "assign_ipv4": "true"}},
                {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
            ],
        }

    def ready(self, provider: Provider, node: str) -> bool:
        """calico/node's readiness probe: `calico-node -felix-ready -bird-ready`, the BIRD
        check only where BIRD runs (what calico-node's own start-up wait looks for)."""
        name = f"{node}-calico-node"
        bird = provider.exec(name, ["test", "-e", "/etc/service/enabled/bird/run"])
        argv = ["calico-node", "-felix-ready"] + (["-bird-ready"] if bird.exit_code == 0 else [])
        return provider.exec(name, argv).exit_code == 0

    def node_status(self, provider: Provider, node: str) -> dict[str, Any]:
        """The node's IPAM blocks (from etcd) and BGP sessions (from its BIRD)."""
        prefix = f"/calico/ipam/v2/host/{node}/ipv4/block/"
        items, _ = ClusterEtcd(provider, model.cluster_of(node)).range(prefix, keys_only=True)
        blocks = sorted(k[len(prefix):].replace("-", "/", 1) for k, _ in items)
        status: dict[str, Any] = {"pod_cidr": ", ".join(blocks), "blocks": blocks,
                                  "bgp_peers": []}
        bird = provider.exec(f"{node}-calico-node",
                             ["birdcl", "-s", BIRD_SOCKET, "show", "protocols"])
        if bird.exit_code == 0:
            status["bgp_peers"] = parse_bird_protocols(bird.stdout)
        link = provider.exec(node, ["ip", "-j", "-d", "link", "show", "vxlan.calico"])
        if link.exit_code == 0 and link.stdout.strip():
            data = (json.loads(link.stdout)[0].get("linkinfo") or {}).get("info_data") or {}
            status["vxlan"] = {"vni": data.get("id"), "port": data.get("port"),
                               "local": data.get("local")}
        return status

    def policy_keys(self, scenario: Scenario) -> dict[str, str]:
        """etcd keys for the scenario's NetworkPolicies, as kube-controllers would write them."""
        out = {}
        for pol in scenario.network_policies:
            doc = network_policy(pol)
            out[f"{RESOURCES}/networkpolicies/{NAMESPACE}/{doc['metadata']['name']}"] = \
                _dumps(doc)
        return out

    def apply_policies(self, provider: Provider, cluster: str, scenario: Scenario) -> int:
        """Play kube-controllers and the k8s CNI path: pod labels onto each pod's
        WorkloadEndpoint, then the policies; felix enforces them. Returns endpoints labelled.

        The "cni" orchestrator path gives endpoints no pod labels, so the orchestrator adds
        them the way Calico's Kubernetes path copies a pod's labels onto its endpoint.
        """
        etcd = ClusterEtcd(provider, cluster)
        labels = {pod: dict(dep.pod_labels) for pod, _, dep in scenario.pods()}
        done = 0
        for index in range(1, scenario.nodes + 1):
            node = model.node_name(cluster, index)
            for pod in NodeAgent(provider, node).pods():
                key = f"{RESOURCES}/workloadendpoints/{NAMESPACE}/" + \
                    wep_name(node, str(pod["container_id"]))
                stored = etcd.get(key)
                if not stored:
                    raise StepError(f"no WorkloadEndpoint for pod {pod['name']} on {node}")
                wep = json.loads(stored)
                wep["metadata"].setdefault("labels", {}).update(labels.get(pod["name"], {}))
                etcd.put(key, _dumps(wep))
                done += 1
        for key, value in self.policy_keys(scenario).items():
            etcd.put(key, value)
        return done

    def pod_cidr_note(self) -> str:
        """calico-ipam hands each node /26 blocks from the pool."""
        return f"/{BLOCK_SIZE} IPAM blocks affine to each node, from the IPPool in etcd"
