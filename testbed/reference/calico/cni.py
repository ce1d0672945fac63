"""Reference `calico`, `calico-ipam` and `install`: one program, chosen by argv[0] (as upstream).

The calico/cni image ships one executable under three names; so does this build: the image
packs this module with model.py, ipam.py, netlink.py and testbed/reference/etcdv3.py into a
single zipapp (`#!/usr/bin/python3`, standard library only) that `install` copies into the
node's /opt/cni/bin, where the node's python3 runs it.

Only the orchestrator-less path ("cni" orchestrator, no K8S_POD_* in CNI_ARGS) exists, with
the etcdv3 datastore: veth `cali<first 11 of container id>` <-> pod eth0 with an /32, default
route via 169.254.1.1 answered by proxy ARP on the host side, host route <ip>/32 scope link,
a WorkloadEndpoint and a profile named after the network, calico-ipam blocks and handles.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from testbed.reference.calico import UPSTREAM_VERSION, ipam, model
from testbed.reference.calico import netlink as nl
from testbed.reference.etcdv3 import Etcd, EtcdError

VERSION = f"{UPSTREAM_VERSION}-testbed-reference"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")
NODENAME_FILE = "/var/lib/calico/nodename"
MTU_FILE = "/var/lib/calico/mtu"
IPAM_LOCK = "/var/run/calico/ipam.lock"
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = "169.254.1.1"
ERR_GENERIC = 100


class PluginError(Exception):
    """A CNI error result: {"cniVersion","code","msg","details"} on stdout, exit 1."""

    def __init__(self, msg: str, code: int = ERR_GENERIC, details: str = "") -> None:
        super().__init__(msg)
        self.msg, self.code, self.details = msg, code, details


def log(level: str, msg: str, **fields: Any) -> None:
    """logrus-like lines on stderr (upstream's default without log_file_path)."""
    extra = " ".join(f"{k}={v!r}" for k, v in fields.items())
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} [{level}][{os.getpid()}] {msg} {extra}".rstrip(), file=sys.stderr)


# --- configuration ------------------------------------------------------------------------------

@dataclass
class NetConf:
    """The fields of calico's types.NetConf this build reads."""

    raw: bytes
    name: str
    cni_version: str
    ipam: dict[str, Any]
    datastore_type: str = "etcdv3"
    etcd_endpoints: str = ""
    nodename: str = ""
    nodename_file: str = ""
    nodename_file_optional: bool = False
    mtu: int = 0
    policy_type: str = ""
    ipam_lock_file: str = ""
    doc: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> NetConf:
        """Decode stdin."""
        try:
            doc = json.loads(raw or b"{}")
        except ValueError as e:
            raise PluginError("failed to load netconf", details=str(e)) from e
        return cls(
            raw=raw, doc=doc, name=str(doc.get("name", "")),
            cni_version=str(doc.get("cniVersion") or "0.2.0"),
            ipam=dict(doc.get("ipam") or {}),
            datastore_type=str(doc.get("datastore_type") or os.environ.get("DATASTORE_TYPE")
                               or "etcdv3"),
            etcd_endpoints=str(doc.get("etcd_endpoints") or os.environ.get("ETCD_ENDPOINTS", "")),
            nodename=str(doc.get("nodename", "")),
            nodename_file=str(doc.get("nodename_file", "")),
            nodename_file_optional=bool(doc.get("nodename_file_optional", False)),
            mtu=int(doc.get("mtu") or 0),
            policy_type=str((doc.get("policy") or {}).get("type", "")),
            ipam_lock_file=str(doc.get("ipam_lock_file", "")),
        )

    def client(self) -> Etcd:
        """The datastore client (utils.CreateClient) -- etcdv3 only in this build."""
        if not all(c.isalnum() or c in "_.-" for c in self.name) or not self.name:
            raise PluginError("invalid characters detected in the given network name. Only "
                              "letters a-z, numbers 0-9, and symbols _.- are supported")
        if self.datastore_type != "etcdv3":
            raise PluginError(f"datastore_type {self.datastore_type!r} is not supported by "
                              "the reference build (etcdv3 only)")
        if not self.etcd_endpoints:
            raise PluginError("no etcd_endpoints in the network configuration")
        return Etcd(self.etcd_endpoints)


@dataclass(frozen=True)
class Args:
    """The CNI_* environment of one invocation."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: list[str]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Args:
        """Read (and check) the environment the runtime set."""
        e = env if env is not None else dict(os.environ)
        cmd = e.get("CNI_COMMAND", "")
        pairs = [p.split("=", 1) for p in e.get("CNI_ARGS", "").split(";") if "=" in p]
        a = cls(command=cmd, container_id=e.get("CNI_CONTAINERID", ""),
                netns=e.get("CNI_NETNS", ""), ifname=e.get("CNI_IFNAME", ""),
                args={k: v for k, v in pairs},
                path=[p for p in e.get("CNI_PATH", "").split(os.pathsep) if p])
        if cmd in ("ADD", "DEL", "CHECK"):
            missing = [n for n, v in (("CNI_CONTAINERID", a.container_id),
                                      ("CNI_IFNAME", a.ifname), ("CNI_PATH", a.path))
                       if not v]
            if cmd != "DEL" and not a.netns:
                missing.append("CNI_NETNS")
            if missing:
                raise PluginError(f"required env variables [{','.join(missing)}] missing",
                                  code=4)
        return a


def nodename(conf: NetConf) -> str:
    """utils.DetermineNodename: conf, then the nodename file, then the hostname."""
    if conf.nodename:
        return conf.nodename
    try:
        with open(conf.nodename_file or NODENAME_FILE) as f:
            name = f.read()
        if name:
            return name
    except FileNotFoundError:
        pass
    return socket.gethostname()


def require_nodename_file(conf: NetConf) -> None:
    """calico/node writes the file at start-up; without it the node is not ready."""
    path = conf.nodename_file or NODENAME_FILE
    if not conf.nodename_file_optional and not os.path.exists(path):
        raise PluginError(f"stat {path}: no such file or directory: check that the "
                          "calico/node container is running and has mounted /var/lib/calico/")


def mtu_from_file(path: str = MTU_FILE) -> int:
    """The MTU felix wrote, 0 when there is none yet."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return 0


def check_datastore_ready(etcd: Etcd) -> None:
    """ClusterInformation 'default' must exist with datastoreReady (written by calico/node)."""
    try:
        kv = etcd.get(model.resource_key("ClusterInformation", "default"))
    except EtcdError as e:
        raise PluginError(f"error getting ClusterInformation: {e}") from e
    if kv is None:
        raise PluginError("error getting ClusterInformation: resource does not exist: "
                          "ClusterInformation(default)")
    if not json.loads(kv.value).get("spec", {}).get("datastoreReady", False):
        raise PluginError("Calico is currently not ready to process requests")


@dataclass(frozen=True)
class Identifiers:
    """utils.GetIdentifiers for the "cni" orchestrator."""

    node: str
    container_id: str
    endpoint: str
    namespace: str

    @property
    def wep_name(self) -> str:
        """`<node>-cni-<container id>-<endpoint>`."""
        return model.wep_name(self.node, self.container_id, self.endpoint)


def identifiers(args: Args, node: str) -> Identifiers:
    """Refuse the k8s path (it needs a kube API); everything else is orchestrator "cni"."""
    if args.args.get("K8S_POD_NAMESPACE") and args.args.get("K8S_POD_NAME"):
        raise PluginError("K8S_POD_NAMESPACE/K8S_POD_NAME select the Kubernetes path, which "
                          "needs a kube API; the reference build has only the \"cni\" path")
    namespace = args.args.get("CNI_TEST_NAMESPACE") or model.DEFAULT_NAMESPACE
    return Identifiers(node=node, container_id=args.container_id, endpoint=args.ifname,
                       namespace=namespace)


# --- results ----------------------------------------------------------------------------------

def format_result(version: str, ips: list[str], interfaces: list[dict[str, Any]]) -> dict[str, Any]:
    """A result in the layout of the requested cniVersion (0.2.0 / 0.3.x-0.4.0 / 1.0.0)."""
    if version in ("0.1.0", "0.2.0"):
        v4 = [ip for ip in ips if ipaddress.ip_interface(ip).version == 4]
        doc: dict[str, Any] = {"cniVersion": version, "dns": {}}
        if v4:
            doc["ip4"] = {"ip": v4[0]}
        return doc
    entries: list[dict[str, Any]] = []
    for ip in ips:
        entry: dict[str, Any] = {"address": ip}
        if version != "1.0.0":
            entry = {"version": str(ipaddress.ip_interface(ip).version), **entry}
        entries.append(entry)
    doc = {"cniVersion": version}
    if interfaces:
        doc["interfaces"] = interfaces
    doc["ips"] = entries
    doc["dns"] = {}
    return doc


def result_ips(result: dict[str, Any]) -> list[str]:
    """Addresses of any result version."""
    if "ips" in result:
        return [str(e["address"]) for e in result["ips"]]
    return [str(result[k]["ip"]) for k in ("ip4", "ip6") if k in result]


# --- IPAM plugin ------------------------------------------------------------------------------

@contextlib.contextmanager
def ipam_lock(path: str) -> Iterator[None]:
    """The best-effort host-wide flock that serialises IPAM calls on one node."""
    fd = -1
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        log("ERROR", "Failed to grab IPAM lock, may contend for datastore updates", error=str(e))
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)


def ipam_add(conf: NetConf, args: Args) -> dict[str, Any]:
    """calico-ipam ADD: one IPv4 address from the node's affine block."""
    node = nodename(conf)
    etcd = conf.client()
    ids = identifiers(args, node)
    handle = model.handle_id(conf.name, args.container_id)
    if args.args.get("IP"):
        raise PluginError("requesting a specific IP (CNI_ARGS IP=) is not supported by the "
                          "reference build")
    ips: list[str] = []
    if str(conf.ipam.get("assign_ipv4", "true")) != "false":
        attrs = {"node": node, "timestamp": model.go_time()}
        with ipam_lock(conf.ipam_lock_file or IPAM_LOCK):
            try:
                ips.append(ipam.Ipam(etcd, node).auto_assign(handle, attrs))
            except ipam.IpamError as e:
                raise PluginError(f"failed to request IPv4 addresses: {e}") from e
    log("INFO", "Calico CNI IPAM assigned addresses", IPv4=ips, HandleID=handle,
        Workload=ids.wep_name)
    return format_result(conf.cni_version, ips, [])


def ipam_del(conf: NetConf, args: Args) -> None:
    """calico-ipam DEL: release by handle, then by the v2-era workload id; absent is fine."""
    node = nodename(conf)
    etcd = conf.client()
    identifiers(args, node)
    client = ipam.Ipam(etcd, node)
    with ipam_lock(conf.ipam_lock_file or IPAM_LOCK):
        for handle in (model.handle_id(conf.name, args.container_id), args.container_id):
            try:
                released = client.release_by_handle(handle)
                log("INFO", "Released address using handleID", HandleID=handle, ips=released)
            except ipam.NotFound:
                log("INFO", "Asked to release address but it doesn't exist. Ignoring",
                    HandleID=handle)
            except ipam.IpamError as e:
                raise PluginError(f"failed to release address: {e}") from e


# --- calico plugin ----------------------------------------------------------------------------

def exec_ipam(conf: NetConf, args: Args, command: str) -> dict[str, Any]:
    """ipam.ExecAdd / ExecDel: run the configured IPAM plugin found on CNI_PATH."""
    kind = str(conf.ipam.get("type", ""))
    exe = next((os.path.join(d, kind) for d in args.path
                if os.access(os.path.join(d, kind), os.X_OK)), None)
    if not kind or exe is None:
        raise PluginError(f"failed to find plugin {kind!r} in path {args.path}", code=4)
    env = {**os.environ, "CNI_COMMAND": command}
    proc = subprocess.run([exe], input=conf.raw, env=env, capture_output=True, timeout=120)
    sys.stderr.write(proc.stderr.decode(errors="replace"))
    out = json.loads(proc.stdout or b"{}") if proc.stdout.strip() else {}
    if proc.returncode != 0:
        raise PluginError(str(out.get("msg") or f"{kind} exited {proc.returncode}"),
                          code=int(out.get("code") or ERR_GENERIC),
                          details=str(out.get("details", "")))
    return dict(out)


def release_ipam(conf: NetConf, args: Args) -> None:
    """utils.ReleaseIPAllocation after a failed ADD (errors only logged)."""
    try:
        exec_ipam(conf, args, "DEL")
    except PluginError as e:
        log("WARNING", "Failed to clean up IP allocations for failed ADD", error=e.msg)


def find_endpoint(etcd: Etcd, ids: Identifiers) -> tuple[dict[str, Any], int] | None:
    """An existing endpoint of this container (any interface), with its mod_revision."""
    prefix = (model.resource_prefix("WorkloadEndpoint", ids.namespace)
              + model.wep_prefix(ids.node, ids.container_id))
    kvs, _ = etcd.get_prefix(prefix)
    for kv in kvs:
        wep = json.loads(kv.value)
        spec = wep.get("spec", {})
        if (spec.get("node") == ids.node and spec.get("orchestrator") == model.ORCHESTRATOR_CNI
                and spec.get("containerID") == ids.container_id):
            return wep, kv.mod_revision
    return None


def configure_host_veth(h: nl.Netlink, index: int, name: str) -> None:
    """dataplane_linux configureSysctls: route_localnet, proxy_delay 0, proxy_arp, forwarding."""
    wants = {f"/proc/sys/net/ipv4/conf/{name}/route_localnet": "1",
             f"/proc/sys/net/ipv4/neigh/{name}/proxy_delay": "0",
             f"/proc/sys/net/ipv4/conf/{name}/proxy_arp": "1",
             f"/proc/sys/net/ipv4/conf/{name}/forwarding": "1"}
    if all(nl.write_sysctl(p, v) for p, v in wants.items()):
        return
    # /proc/sys stayed read-only: the same kernel values over netlink.
    h.set_devconf(index, {"route_localnet": 1, "proxy_arp": 1, "forwarding": 1})
    h.set_proxy_delay(index, 0)


def do_networking(args: Args, ips: list[str], host_veth: str, mtu: int) -> str:
    """The veth pair, the pod side (/32, 169.254.1.1 routes) and the host route; pod MAC."""
    pod_mac = nl.random_mac()
    with nl.Netlink() as host:
        old = nl.link_index(host_veth)
        if old is not None:
            log("INFO", "Cleaning old hostVeth", name=host_veth)
            host.delete_link(old)
        fd = os.open(args.netns, os.O_RDONLY)
        try:
            host.add_veth(host_veth, args.ifname, fd, mtu=mtu, mac=HOST_VETH_MAC,
                          peer_mac=pod_mac)
        finally:
            os.close(fd)
        index = nl.link_index(host_veth)
        if index is None:
            raise PluginError(f"failed to lookup {host_veth!r}")
        host.set_up(index)
        v4 = [str(ipaddress.ip_interface(ip).ip) for ip in ips
               if ipaddress.ip_interface(ip).version == 4]
        with nl.netns(args.netns), nl.Netlink() as pod:
            cont = nl.link_index(args.ifname)
            if cont is None:
                raise PluginError(f"failed to lookup {args.ifname!r} in {args.netns}")
            pod.set_up(cont)
            if v4:
                pod.add_route(f"{GATEWAY}/32", cont, scope=nl.RT_SCOPE_LINK)
                pod.add_route("0.0.0.0/0", cont, GATEWAY)
            for ip in v4:
                pod.add_address(cont, f"{ip}/32")
            # allow_ip_forwarding defaults to false: the pod does not route.
            if v4 and not nl.write_sysctl("/proc/sys/net/ipv4/ip_forward", "0"):
                raise PluginError("failed to set net.ipv4.ip_forward=0 in the pod namespace")
        configure_host_veth(host, index, host_veth)
        for ip in v4:
            try:
                host.add_route(f"{ip}/32", index, scope=nl.RT_SCOPE_LINK)
            except nl.NetlinkError as e:
                if e.errno != 17:  # EEXIST: felix may have programmed it already
                    raise
                host.add_route(f"{ip}/32", index, scope=nl.RT_SCOPE_LINK, replace=True)
    return pod_mac


def cleanup_namespace(args: Args) -> None:
    """CleanUpNamespace: delete the pod's interface (its veth peer goes too)."""
    if not args.netns or not os.path.exists(args.netns):
        log("INFO", "Workload's netns already gone.  Nothing to do.", netns=args.netns)
        return
    with nl.netns(args.netns), nl.Netlink() as pod:
        index = nl.link_index(args.ifname)
        if index is None:
            log("INFO", "Workload's veth was already gone.  Nothing to do.")
            return
        pod.delete_link(index)


def ensure_profile(etcd: Etcd, network: str) -> None:
    """The plugin creates the network's profile if missing and never updates one."""
    key = model.resource_key("Profile", network)
    if etcd.get(key) is not None:
        return
    log("INFO", "Calico CNI creating profile", profile=network)
    res = model.resource("Profile", network, model.profile_spec(network, allow_all_ingress=False))
    ipam.put_if(etcd, key, model.dumps(res), 0)


def plugin_add(conf: NetConf, args: Args) -> dict[str, Any]:
    """calico ADD."""
    require_nodename_file(conf)
    file_mtu = mtu_from_file()
    if conf.mtu == 0 and file_mtu:
        conf.mtu = file_mtu
    node = nodename(conf)
    ids = identifiers(args, node)
    etcd = conf.client()
    check_datastore_ready(etcd)
    existing = find_endpoint(etcd, ids)
    if existing is not None:
        wep, rev = existing
        profiles = wep["spec"].setdefault("profiles", [])
        if conf.name not in profiles:
            profiles.append(conf.name)
        if not ipam.put_if(etcd, model.resource_key("WorkloadEndpoint", wep["metadata"]["name"],
                                                     ids.namespace), model.dumps(wep), rev):
            raise PluginError("update conflict on the existing WorkloadEndpoint")
        ips = list(wep["spec"].get("ipNetworks", []))
        interfaces = [{"name": wep["spec"].get("interfaceName", ""),
                       "mac": wep["spec"].get("mac", ""), "sandbox": args.netns}]
    else:
        ipam_result = exec_ipam(conf, args, "ADD")
        ips = [f"{ipaddress.ip_interface(ip).ip}/{ipaddress.ip_interface(ip).max_prefixlen}"
               for ip in result_ips(ipam_result)]
        if not ips:
            release_ipam(conf, args)
            raise PluginError("IPAM plugin returned no IP addresses in result")
        host_veth = model.host_veth_name(args.container_id)
        spec: dict[str, Any] = {
            "orchestrator": model.ORCHESTRATOR_CNI, "node": node,
            "containerID": args.container_id, "endpoint": args.ifname,
            "ipNetworks": ips, "profiles": [conf.name],
        }
        try:
            spec["mac"] = do_networking(args, ips, host_veth, conf.mtu)
            spec["interfaceName"] = host_veth
            wep = model.resource("WorkloadEndpoint", ids.wep_name, spec,
                                 namespace=ids.namespace, labels=model.wep_labels(ids.namespace))
            key = model.resource_key("WorkloadEndpoint", ids.wep_name, ids.namespace)
            if not ipam.put_if(etcd, key, model.dumps(wep), 0):
                raise PluginError(f"resource already exists: WorkloadEndpoint({ids.namespace}/"
                                  f"{ids.wep_name})")
        except (OSError, EtcdError, PluginError) as e:
            release_ipam(conf, args)
            with contextlib.suppress(OSError):
                index = nl.link_index(host_veth)
                if index is not None:
                    with nl.Netlink() as h:
                        h.delete_link(index)
            if isinstance(e, PluginError):
                raise
            raise PluginError(f"error setting up networking: {e}") from e
        log("INFO", "Wrote endpoint to datastore", WorkloadEndpoint=ids.wep_name, ips=ips)
        interfaces = [{"name": host_veth, "mac": spec["mac"], "sandbox": args.netns}]
    if not conf.policy_type:
        ensure_profile(etcd, conf.name)
    return format_result(conf.cni_version, ips, interfaces)


def plugin_del(conf: NetConf, args: Args) -> None:
    """calico DEL: IPAM release, endpoint delete, namespace clean-up (IPAM error last)."""
    require_nodename_file(conf)
    node = nodename(conf)
    ids = identifiers(args, node)
    etcd = conf.client()
    check_datastore_ready(etcd)
    ipam_error: PluginError | None = None
    try:
        exec_ipam(conf, args, "DEL")
    except PluginError as e:
        ipam_error = e
    etcd.delete(model.resource_key("WorkloadEndpoint", ids.wep_name, ids.namespace))
    cleanup_namespace(args)
    if ipam_error is not None:
        raise ipam_error


# --- install (the calico/cni image's init container) -------------------------------------------

def install(env: dict[str, str] | None = None, src_dir: str = "/opt/cni/bin",
            host_root: str = "/host") -> int:
    """install.go: copy every binary of the image to the host, then write the CNI config."""
    e = env if env is not None else dict(os.environ)
    skip = {s for s in e.get("SKIP_CNI_BINARIES", "").split(",") if s}
    update = e.get("UPDATE_CNI_BINARIES", "true").lower() != "false"
    host_bin = f"{host_root}/opt/cni/bin"
    for old in ("calico", "calico-ipam"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{host_bin}/{old}")
    written = False
    for d in (host_bin, f"{host_root}/secondary-bin-dir"):
        if not (os.path.isdir(d) and os.access(d, os.W_OK)):
            log("INFO", f"{d} is not writeable, skipping")
            continue
        written = True
        for binary in sorted(os.listdir(src_dir)):
            target = f"{d}/{binary}"
            if binary in skip or (os.path.exists(target) and not update):
                continue
            shutil.copyfile(f"{src_dir}/{binary}", target + ".tmp")
            os.replace(target + ".tmp", target)  # atomic, and replaces a symlink itself
            shutil.copymode(f"{src_dir}/{binary}", target)
            log("INFO", f"Installed {target}")
        log("INFO", f"Wrote Calico CNI binaries to {d}")
    if not written:
        log("FATAL", "found no writeable directory, exiting")
        return 1
    netconf = e.get("CNI_NETWORK_CONFIG", "")
    if e.get("CNI_NETWORK_CONFIG_FILE"):
        with open(e["CNI_NETWORK_CONFIG_FILE"]) as f:
            netconf = f.read()
    if netconf:
        for token, value in (("__KUBERNETES_NODE_NAME__", e.get("KUBERNETES_NODE_NAME",
                                                                 socket.gethostname())),
                             ("__ETCD_ENDPOINTS__", e.get("ETCD_ENDPOINTS", "")),
                             ("__DATASTORE_TYPE__", e.get("DATASTORE_TYPE", "kubernetes")),
                             ("__CNI_MTU__", e.get("CNI_MTU", "1500")),
                             ("__LOG_LEVEL__", e.get("LOG_LEVEL", "info"))):
            netconf = netconf.replace(token, value)
        json.loads(netconf)  # must be valid JSON, as upstream checks
        name = e.get("CNI_CONF_NAME", "10-calico.conflist")
        path = f"{host_root}/etc/cni/net.d/{name}"
        with open(path, "w") as f:
            f.write(netconf)
        log("INFO", f"Created {path}")
        print(netconf)
    else:
        log("WARNING", "no CNI_NETWORK_CONFIG: the k8s default conflist needs a kube API; "
            "not written by the reference build")
    log("INFO", f"Done configuring CNI.  Sleep= {e.get('SLEEP', 'true')}")
    while e.get("SLEEP", "true").lower() != "false":
        time.sleep(3600)
    return 0


# --- entry ------------------------------------------------------------------------------------

def _version_doc() -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def run_cni(program: str, stdin: bytes) -> int:
    """One CNI invocation of `calico` or `calico-ipam`; prints result or error JSON."""
    version = "1.0.0"
    try:
        args = Args.from_env()
        if args.command == "VERSION":
            print(model.dumps(_version_doc()))
            return 0
        conf = NetConf.parse(stdin)
        version = conf.cni_version
        if version not in SUPPORTED_VERSIONS:
            raise PluginError(f"unsupported CNI version {version}", code=1)
        if program == "calico-ipam":
            if args.command == "ADD":
                print(model.dumps(ipam_add(conf, args)))
            elif args.command == "DEL":
                ipam_del(conf, args)
            else:
                raise PluginError(f"unknown CNI_COMMAND {args.command!r}", code=4)
            return 0
        if args.command == "ADD":
            print(model.dumps(plugin_add(conf, args)))
        elif args.command == "DEL":
            plugin_del(conf, args)
        elif args.command != "CHECK":
            raise PluginError(f"unknown CNI_COMMAND {args.command!r}", code=4)
        return 0
    except PluginError as e:
        log("ERROR", f"Final result of CNI {os.environ.get('CNI_COMMAND', '')} was an error.",
            error=e.msg)
        doc = {"cniVersion": version, "code": e.code, "msg": e.msg}
        if e.details:
            doc["details"] = e.details
        print(model.dumps(doc))
        return 1
    except (OSError, EtcdError, ValueError) as e:
        log("ERROR", "Final result was an error.", error=str(e))
        print(model.dumps({"cniVersion": version, "code": ERR_GENERIC, "msg": str(e)}))
        return 1


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the name this program was called by, like cni-plugin/cmd/calico."""
    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0]) if argv else "calico"
    if "-v" in argv[1:]:
        print(VERSION)
        return 0
    if program == "install":
        return install()
    if "-t" in argv[1:]:  # datastore connection test
        try:
            check_datastore_ready(NetConf.parse(sys.stdin.buffer.read()).client())
        except (PluginError, EtcdError) as e:
            print(json.dumps({"code": ERR_GENERIC, "msg": "data store connection failed",
                              "details": str(e)}, separators=(",", ":")))
            return 1
        return 0
    stdin = b"" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
    return run_cni("calico-ipam" if program == "calico-ipam" else "calico", stdin)


if __name__ == "__main__":
    raise SystemExit(main())
