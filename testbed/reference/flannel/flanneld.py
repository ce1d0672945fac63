#!/usr/bin/python3
"""Reference flanneld: upstream's etcd datastore mode with the vxlan and host-gw backends."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import http.server
import ipaddress
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

from testbed.reference.etcdv3 import Etcd, EtcdCompacted, EtcdError, Watch
from testbed.reference.flannel import REFERENCE_VERSION, UPSTREAM_VERSION

log = logging.getLogger("flanneld")

LEASE_TTL = 24 * 3600
RACE_RETRIES = 10
ALLOCATION_WINDOW = 100
ENCAP_OVERHEAD = 50
DEFAULT_VXLAN_PORT = 8472
KUBE_PROXY_MARK = "0x4000/0x4000"
RENEW_RETRY = 60.0
BR_NETFILTER = "/proc/sys/net/bridge/bridge-nf-call-iptables"
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
MAIN_TABLE = 254
RTPROT_BOOT = 3  # what vishvananda/netlink leaves on routes flanneld adds
HEALTHZ_BODY = b"flanneld is running"


class Fatal(Exception):
    """An error that makes flanneld exit 1, as upstream does (no fallback)."""


class Stopped(Exception):
    """A signal arrived before startup finished: exit 0."""


class ConfigError(Exception):
    """The network config in etcd is missing or invalid (flanneld keeps retrying)."""


# --------------------------------------------------------------------------
# logging (klog's header: Lmmdd hh:mm:ss.uuuuuu pid file:line] msg)
# --------------------------------------------------------------------------
class KlogFormatter(logging.Formatter):
    """Format records like klog so logs read like upstream's."""

    LETTERS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
               logging.ERROR: "E", logging.CRITICAL: "F"}

    def format(self, record: logging.LogRecord) -> str:
        """One klog-style line (plus a traceback when there is one)."""
        t = datetime.datetime.fromtimestamp(record.created)
        head = (f"{self.LETTERS.get(record.levelno, 'I')}{t:%m%d %H:%M:%S}.{t.microsecond:06d} "
                f"{record.process:>7} {record.filename}:{record.lineno}] ")
        text = head + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbosity: int) -> None:
    """Log to stderr in klog form; -v >= 1 enables debug lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KlogFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    log.propagate = False


# --------------------------------------------------------------------------
# flags (upstream names; FLANNELD_<FLAG> env fallback like flagutil.SetFlagsFromEnv)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    """One upstream command-line flag."""

    name: str
    kind: str  # str | int | bool | list
    default: Any
    help: str

    @property
    def env(self) -> str:
        """The environment variable upstream reads when the flag is not given."""
        return "FLANNELD_" + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        """The attribute name in Options."""
        return self.name.replace("-", "_")


FLAGS: tuple[Flag, ...] = (
    Flag("etcd-endpoints", "str", "http://127.0.0.1:4001,http://127.0.0.1:2379",
         "a comma-delimited list of etcd endpoints"),
    Flag("etcd-prefix", "str", "/coreos.com/network", "etcd prefix"),
    Flag("etcd-keyfile", "str", "", "SSL key file used to secure etcd communication (ignored)"),
    Flag("etcd-certfile", "str", "", "SSL certification file for etcd (ignored)"),
    Flag("etcd-cafile", "str", "", "SSL Certificate Authority file for etcd (ignored)"),
    Flag("etcd-username", "str", "", "username for BasicAuth to etcd (ignored)"),
    Flag("etcd-password", "str", "", "password for BasicAuth to etcd (ignored)"),
    Flag("iface", "list", (), "interface to use (IP or name) for inter-host communication; "
         "repeatable, first match wins"),
    Flag("iface-regex", "list", (), "regex matching the interface (IP or name) to use; repeatable"),
    Flag("iface-can-reach", "str", "", "use the interface that routes to this IP"),
    Flag("subnet-file", "str", "/run/flannel/subnet.env",
         "filename where env variables (subnet, MTU, ... ) will be written to"),
    Flag("public-ip", "str", "", "IP accessible by other nodes for inter-host communication"),
    Flag("public-ipv6", "str", "", "IPv6 accessible by other nodes (unsupported, ignored)"),
    Flag("subnet-lease-renew-margin", "int", 60,
         "subnet lease renewal margin, in minutes, ranging from 1 to 1439"),
    Flag("ip-masq", "bool", False,
         "setup IP masquerade rule for traffic destined outside of overlay network"),
    Flag("kube-subnet-mgr", "bool", False, "contact the Kubernetes API (unsupported here)"),
    Flag("kube-api-url", "str", "", "Kubernetes API server URL (ignored)"),
    Flag("kube-annotation-prefix", "str", "flannel.alpha.coreos.com", "(ignored)"),
    Flag("kubeconfig-file", "str", "", "kubeconfig file location (ignored)"),
    Flag("net-config-path", "str", "/etc/kube-flannel/net-conf.json", "(kube mode only, ignored)"),
    Flag("version", "bool", False, "print version and exit"),
    Flag("healthz-ip", "str", "0.0.0.0", "the IP address for healthz server to listen"),
    Flag("healthz-port", "int", 0, "the port for healthz server to listen(0 to disable)"),
    Flag("iptables-resync", "int", 5, "resync period for iptables rules, in seconds"),
    Flag("iptables-forward-rules", "bool", True,
         "add default accept rules to FORWARD chain in iptables"),
    Flag("set-node-network-unavailable", "bool", True, "(kube mode only, ignored)"),
    Flag("use-multi-cluster-cidr", "bool", False, "(ignored)"),
    Flag("persistent-mac", "bool", False, "(kube mode only, ignored)"),
    Flag("v", "int", 0, "number for the log level verbosity"),
    Flag("vmodule", "str", "", "(accepted, ignored)"),
    Flag("log_backtrace_at", "str", "", "(accepted, ignored)"),
)


@dataclass
class Options:
    """Parsed flags, after the environment fallback."""

    etcd_endpoints: str = ""
    etcd_prefix: str = ""
    iface: list[str] = field(default_factory=list)
    iface_regex: list[str] = field(default_factory=list)
    iface_can_reach: str = ""
    subnet_file: str = ""
    public_ip: str = ""
    public_ipv6: str = ""
    subnet_lease_renew_margin: int = 60
    ip_masq: bool = False
    kube_subnet_mgr: bool = False
    version: bool = False
    healthz_ip: str = ""
    healthz_port: int = 0
    iptables_resync: int = 5
    iptables_forward_rules: bool = True
    v: int = 0
    ignored: dict[str, Any] = field(default_factory=dict)


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean value {text!r}")


def convert(flag: Flag, raw: Any) -> Any:
    """Turn a raw CLI/env value into the flag's type."""
    if flag.kind == "bool":
        return raw if isinstance(raw, bool) else parse_bool(str(raw))
    if flag.kind == "int":
        return int(str(raw), 0)
    if flag.kind == "list":
        return [raw] if isinstance(raw, str) else list(raw)
    return str(raw)


def go_style_argv(argv: Sequence[str]) -> list[str]:
    """Go accepts -flag as well as --flag; argparse needs --flag for long names."""
    out = []
    for arg in argv:
        name = arg[1:].split("=", 1)[0]
        if arg.startswith("-") and not arg.startswith("--") and len(name) > 1:
            arg = "-" + arg
        out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser for every upstream flag (no defaults: env may fill them)."""
    parser = argparse.ArgumentParser(prog="flanneld", description=__doc__)
    for flag in FLAGS:
        names = [f"--{flag.name}"] + (["-v"] if flag.name == "v" else [])
        if flag.kind == "bool":
            parser.add_argument(*names, dest=flag.dest, nargs="?", const="true",
                                default=None, help=flag.help)
        elif flag.kind == "list":
            parser.add_argument(*names, dest=flag.dest, action="append", default=None,
                                help=flag.help)
        else:
            parser.add_argument(*names, dest=flag.dest, default=None, help=flag.help)
    return parser


def parse_options(argv: Sequence[str], env: dict[str, str]) -> Options:
    """Flags first, then FLANNELD_* for flags not given, then upstream's defaults."""
    parser = build_parser()
    ns = vars(parser.parse_args(go_style_argv(argv)))
    opts = Options()
    for flag in FLAGS:
        raw = ns.get(flag.dest)
        if raw is None and env.get(flag.env):
            raw = env[flag.env]
        try:
            value = flag.default if raw is None else convert(flag, raw)
        except ValueError as e:
            parser.error(f"invalid value for --{flag.name}: {e}")
        if flag.kind == "list":
            value = list(value)
        if hasattr(opts, flag.dest) and flag.dest != "ignored":
            setattr(opts, flag.dest, value)
        else:
            opts.ignored[flag.name] = value
    return opts


def describe_options(opts: Options) -> str:
    """The one-line summary upstream logs as 'CLI flags config'."""
    shown = {k: v for k, v in vars(opts).items() if k not in ("ignored",)}
    return "{" + " ".join(f"{k}:{v}" for k, v in shown.items()) + "}"


# --------------------------------------------------------------------------
# network config (<prefix>/config), checked like subnet.CheckNetworkConfig
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class NetConfig:
    """The network config in etcd, with SubnetLen/SubnetMin/SubnetMax resolved."""

    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend_type: str
    backend: dict[str, Any]
    enable_ipv6: bool = False
    enable_nftables: bool = False


def lower_keys(d: dict[str, Any]) -> dict[str, Any]:
    """Go's encoding/json matches field names case-insensitively."""
    return {str(k).lower(): v for k, v in d.items()}


def parse_config(text: str) -> NetConfig:
    """Parse and check the JSON network config (raises ConfigError with upstream's words)."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"error decoding network config: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError("network config is not a JSON object")
    cfg = lower_keys(raw)
    network = _parse_network(cfg.get("network"))
    subnet_len = _subnet_len(network, int(cfg.get("subnetlen") or 0))
    size = 1 << (32 - subnet_len)
    smin = _bound(cfg.get("subnetmin"), network, int(network.network_address) + size, "SubnetMin")
    smax = _bound(cfg.get("subnetmax"), network,
                  int(network.broadcast_address) + 1 - size, "SubnetMax")
    for name, value in (("SubnetMin", smin), ("SubnetMax", smax)):
        if int(value) % size:
            raise ConfigError(f"{name} is not on a SubnetLen boundary: {value}")
    backend = cfg.get("backend")
    backend = lower_keys(backend) if isinstance(backend, dict) else {}
    return NetConfig(
        network=network, subnet_len=subnet_len, subnet_min=smin, subnet_max=smax,
        backend_type=str(backend.get("type", "udp")) if cfg.get("backend") else "udp",
        backend=backend,
        enable_ipv6=bool(cfg.get("enableipv6", False)),
        enable_nftables=bool(cfg.get("enablenftables", False)),
    )


def _parse_network(value: Any) -> IPv4Network:
    if not value:
        raise ConfigError("please define a correct Network parameter in the flannel config")
    try:
        return IPv4Network(str(value), strict=False)
    except ValueError as e:
        raise ConfigError(f"invalid Network {value!r}: {e}") from e


def _subnet_len(network: IPv4Network, subnet_len: int) -> int:
    if subnet_len > 0:
        if subnet_len > 30:
            raise ConfigError("SubnetLen must be less than /31")
        if subnet_len < network.prefixlen + 2:
            raise ConfigError("network must be able to accommodate at least four subnets")
        return subnet_len
    if network.prefixlen > 28:
        raise ConfigError("network is too small. Minimum useful network prefix is /28")
    return 24 if network.prefixlen <= 22 else network.prefixlen + 2


def _bound(value: Any, network: IPv4Network, default: int, name: str) -> IPv4Address:
    if not value:
        return IPv4Address(default)
    try:
        addr = IPv4Address(str(value))
    except ValueError as e:
        raise ConfigError(f"invalid {name} {value!r}") from e
    if addr not in network:
        raise ConfigError(f"{name} is not in the range of the Network")
    return addr


# --------------------------------------------------------------------------
# subnets and leases (etcd schema: <prefix>/subnets/<ip>-<len>)
# --------------------------------------------------------------------------
SUBNET_KEY_RE = re.compile(r"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


def make_subnet_key(subnet: IPv4Network) -> str:
    """10.244.3.0/24 -> 10.244.3.0-24."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def parse_subnet_key(key: str) -> IPv4Network | None:
    """The subnet named by a lease key (None when the key names none)."""
    m = SUBNET_KEY_RE.search(key)
    if not m:
        return None
    try:
        return IPv4Network(f"{m.group(1)}/{m.group(2)}")
    except ValueError:
        return None


def subnet_compatible(cfg: NetConfig, subnet: IPv4Network) -> bool:
    """Whether a leased subnet still fits the configured range and length."""
    ip = subnet.network_address
    return cfg.subnet_min <= ip <= cfg.subnet_max and subnet.prefixlen == cfg.subnet_len


def free_subnets(cfg: NetConfig, taken: Iterable[IPv4Network],
                 limit: int = ALLOCATION_WINDOW) -> list[IPv4Network]:
    """The first `limit` unleased subnets from SubnetMin up to SubnetMax."""
    taken = list(taken)
    size = 1 << (32 - cfg.subnet_len)
    out: list[IPv4Network] = []
    ip = int(cfg.subnet_min)
    while ip <= int(cfg.subnet_max) and len(out) < limit:
        sn = IPv4Network((ip, cfg.subnet_len))
        if not any(sn.overlaps(t) for t in taken):
            out.append(sn)
        ip += size
    return out


def allocate_subnet(cfg: NetConfig, taken: Iterable[IPv4Network],
                    rng: random.Random | None = None) -> IPv4Network:
    """Pick one free subnet at random among the first 100 (upstream's allocateSubnet)."""
    log.info("Picking subnet in range %s ... %s", cfg.subnet_min, cfg.subnet_max)
    free = free_subnets(cfg, taken)
    if not free:
        raise Fatal("out of subnets")
    return (rng or random.Random()).choice(free)


@dataclass(frozen=True)
class LeaseAttrs:
    """The lease value: upstream's lease.LeaseAttrs, marshalled as Go does."""

    public_ip: IPv4Address
    backend_type: str = ""
    backend_data: dict[str, Any] | None = None

    def to_json(self) -> str:
        """{"PublicIP":..,"PublicIPv6":null,"BackendType":..,"BackendData":..} (omitempty)."""
        doc: dict[str, Any] = {"PublicIP": str(self.public_ip), "PublicIPv6": None}
        if self.backend_type:
            doc["BackendType"] = self.backend_type
        if self.backend_data is not None:
            doc["BackendData"] = self.backend_data
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> LeaseAttrs:
        """Parse a lease value (field names case-insensitive, like Go)."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("lease value is not a JSON object")
        d = lower_keys(doc)
        data = d.get("backenddata")
        return cls(public_ip=IPv4Address(str(d.get("publicip") or "0.0.0.0")),
                   backend_type=str(d.get("backendtype") or ""),
                   backend_data=data if isinstance(data, dict) else None)


@dataclass(frozen=True)
class Lease:
    """A subnet lease: the subnet, its attributes and the etcd lease holding it."""

    subnet: IPv4Network
    attrs: LeaseAttrs
    lease_id: int = 0


def vxlan_backend_data(vni: int, mac: str) -> dict[str, Any]:
    """BackendData of a vxlan lease: {"VNI":1,"VtepMAC":"aa:bb:..."}."""
    return {"VNI": vni, "VtepMAC": mac.lower()}


# --------------------------------------------------------------------------
# subnet file (/run/flannel/subnet.env)
# --------------------------------------------------------------------------
def render_subnet_file(network: IPv4Network, subnet: IPv4Network, mtu: int, ip_masq: bool) -> str:
    """Upstream's WriteSubnetFile content: FLANNEL_SUBNET carries the first usable IP."""
    first = IPv4Address(int(subnet.network_address) + 1)
    return (f"FLANNEL_NETWORK={network}\n"
            f"FLANNEL_SUBNET={first}/{subnet.prefixlen}\n"
            f"FLANNEL_MTU={mtu}\n"
            f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}\n")


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines (comments, blanks, `export` and quotes tolerated, like godotenv)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def read_subnet_file(path: str) -> dict[str, str]:
    """The previous subnet file's values ({} when it does not exist or is unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_env(f.read())
    except OSError:
        return {}


def env_cidr(values: dict[str, str], key: str) -> IPv4Network | None:
    """A CIDR value (host bits masked, like net.ParseCIDR) or None."""
    raw = values.get(key, "").split(",")[0].strip()
    if not raw:
        return None
    try:
        return IPv4Network(raw, strict=False)
    except ValueError:
        return None


def write_file_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write via a temp file in the same directory and rename(2) it into place."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# etcd registry and lease management (pkg/subnet/etcd)
# --------------------------------------------------------------------------
class Registry:
    """Leases and network config under an etcd prefix."""

    def __init__(self, etcd: Etcd, prefix: str) -> None:
        self.etcd = etcd
        self.prefix = "/" + prefix.strip("/")
        self.subnets_prefix = f"{self.prefix}/subnets/"

    def key(self, subnet: IPv4Network) -> str:
        """The lease key of a subnet."""
        return self.subnets_prefix + make_subnet_key(subnet)

    def network_config(self) -> str:
        """The raw <prefix>/config value."""
        kv = self.etcd.get(f"{self.prefix}/config")
        if kv is None:
            raise ConfigError("flannel config not found in etcd store. "
                              "Did you create your config using etcdv3 API?")
        return kv.text

    def leases(self) -> tuple[list[Lease], int]:
        """Every parseable lease, and the revision they were read at."""
        kvs, revision = self.etcd.get_prefix(self.subnets_prefix)
        leases = []
        for kv in kvs:
            subnet = parse_subnet_key(kv.key)
            try:
                if subnet is None:
                    raise ValueError("not a subnet key")
                leases.append(Lease(subnet, LeaseAttrs.from_json(kv.value), kv.lease))
            except ValueError as e:
                log.warning("Ignoring bad subnet node %s: %s", kv.key, e)
        return leases, revision

    def create(self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: int) -> Lease | None:
        """Claim a subnet atomically; None when someone else holds it."""
        grant = self.etcd.lease_grant(ttl)
        try:
            created = self.etcd.create(self.key(subnet), attrs.to_json(), lease=grant.id)
        except EtcdError:
            self.etcd.lease_revoke(grant.id)
            raise
        if not created:
            self.etcd.lease_revoke(grant.id)
            return None
        return Lease(subnet, attrs, grant.id)

    def update(self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: int, old_lease: int = 0) -> Lease:
        """Rewrite a lease on a fresh etcd lease (upstream's updateSubnet), dropping the old one."""
        grant = self.etcd.lease_grant(ttl)
        try:
            self.etcd.put(self.key(subnet), attrs.to_json(), lease=grant.id)
        except EtcdError:
            self.etcd.lease_revoke(grant.id)
            raise
        if old_lease and old_lease != grant.id:
            with contextlib.suppress(EtcdError):
                self.etcd.lease_revoke(old_lease)
        return Lease(subnet, attrs, grant.id)

    def delete(self, subnet: IPv4Network) -> None:
        """Remove a lease key."""
        self.etcd.delete(self.key(subnet))


class LeaseStore(Protocol):
    """What lease acquisition needs from a registry (a fake one in tests)."""

    def leases(self) -> tuple[list[Lease], int]:
        """All leases and a revision."""

    def create(self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: int) -> Lease | None:
        """Claim atomically or return None."""

    def update(self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: int,
               old_lease: int = 0) -> Lease:
        """Rewrite a lease."""

    def delete(self, subnet: IPv4Network) -> None:
        """Remove a lease."""


def acquire_lease(store: LeaseStore, cfg: NetConfig, attrs: LeaseAttrs,
                  previous: IPv4Network | None, rng: random.Random | None = None) -> Lease:
    """Reuse our lease (same PublicIP) or the previous subnet, else claim a free one."""
    for _ in range(RACE_RETRIES):
        lease = _try_acquire(store, cfg, attrs, previous, rng)
        if lease is not None:
            return lease
    raise Fatal("Max retries reached trying to acquire a subnet")


def _try_acquire(store: LeaseStore, cfg: NetConfig, attrs: LeaseAttrs,
                 previous: IPv4Network | None, rng: random.Random | None) -> Lease | None:
    leases, _ = store.leases()
    mine = next((le for le in leases if le.attrs.public_ip == attrs.public_ip), None)
    if mine is not None:
        if subnet_compatible(cfg, mine.subnet):
            log.info("Found lease (ip: %s ipv6: ::/0) for current IP (%s), reusing",
                     mine.subnet, attrs.public_ip)
            return store.update(mine.subnet, attrs, LEASE_TTL, mine.lease_id)
        log.info("Found lease (%s) for current IP (%s) but not compatible with current config, "
                 "deleting", mine.subnet, attrs.public_ip)
        store.delete(mine.subnet)
        leases = [le for le in leases if le is not mine]
    subnet = _previous_subnet(cfg, leases, previous)
    if subnet is None:
        subnet = allocate_subnet(cfg, (le.subnet for le in leases), rng)
    lease = store.create(subnet, attrs, LEASE_TTL)
    if lease is not None:
        log.info("Allocated lease (ip: %s ipv6: ::/0) to current node (%s)",
                 subnet, attrs.public_ip)
    return lease


def _previous_subnet(cfg: NetConfig, leases: list[Lease],
                     previous: IPv4Network | None) -> IPv4Network | None:
    if previous is None or any(le.subnet == previous for le in leases):
        return None
    if not subnet_compatible(cfg, previous):
        log.error("Found previously leased subnet (%s) that is not compatible with the Etcd "
                  "network config, ignoring", previous)
        return None
    log.info("Found previously leased subnet (%s), reusing", previous)
    return previous


# --------------------------------------------------------------------------
# external interface (pkg/ipmatch)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ExternalInterface:
    """The interface used between nodes, its address and the advertised public IP."""

    name: str
    index: int
    mtu: int
    iface_addr: IPv4Address
    ext_addr: IPv4Address


def _links(ipr: Any) -> list[tuple[int, str, int]]:
    return [(lk["index"], lk.get("IFLA_IFNAME"), lk.get("IFLA_MTU") or 0)
            for lk in ipr.get_links()]


def _ipv4_addrs(ipr: Any, index: int) -> list[IPv4Address]:
    addrs = [(a["scope"], IPv4Address(a.get("IFA_ADDRESS") or a.get("IFA_LOCAL")))
             for a in ipr.get_addr(family=socket.AF_INET, index=index)]
    return [ip for _, ip in sorted(addrs, key=lambda x: x[0])]


def _by_name(ipr: Any, name: str) -> tuple[int, str, int]:
    for link in _links(ipr):
        if link[1] == name:
            return link
    raise LookupError(f"error looking up interface {name}: route ip+net: no such network interface")


def _by_ip(ipr: Any, ip: IPv4Address) -> tuple[int, str, int]:
    for link in _links(ipr):
        if ip in _ipv4_addrs(ipr, link[0]):
            return link
    raise LookupError(f"error looking up interface {ip}: No interface with given IP found")


def _by_regex(ipr: Any, pattern: str) -> tuple[tuple[int, str, int], IPv4Address | None]:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise LookupError(f"could not compile the IP address regex '{pattern}': {e}") from e
    links = _links(ipr)
    for link in links:
        for ip in _ipv4_addrs(ipr, link[0]):
            if rx.search(str(ip)):
                return link, ip
    for link in links:
        if rx.search(link[1]):
            return link, None
    names = ", ".join(f"{lk[1]}:{[str(i) for i in _ipv4_addrs(ipr, lk[0])]}" for lk in links)
    raise LookupError(f"Could not match pattern {pattern} to any of the available network "
                      f"interfaces ({names})")


def _by_route(ipr: Any, dst: str | None) -> tuple[tuple[int, str, int], IPv4Address | None]:
    if dst is None:
        routes = [r for r in ipr.get_default_routes(family=socket.AF_INET)
                  if r.get("RTA_TABLE", MAIN_TABLE) == MAIN_TABLE]
        if not routes:
            raise LookupError("failed to get default interface: Unable to find default route")
        src = None
    else:
        routes = ipr.route("get", dst=dst)
        src = routes[0].get("RTA_PREFSRC") if routes else None
    index = routes[0].get("RTA_OIF")
    link = next((lk for lk in _links(ipr) if lk[0] == index), None)
    if link is None:
        raise LookupError(f"no interface for the route to {dst or 'default'}")
    return link, IPv4Address(src) if src else None


def _candidate(ipr: Any, opts: Options) -> tuple[tuple[int, str, int], IPv4Address | None]:
    errors = []
    for spec in opts.iface:
        try:
            ip = ipaddress.ip_address(spec)
        except ValueError:
            ip = None
        try:
            if ip is not None:
                log.info("Searching for interface using %s", ip)
                return _by_ip(ipr, IPv4Address(ip)), IPv4Address(ip)
            return _by_name(ipr, spec), None
        except (LookupError, ipaddress.AddressValueError) as e:
            log.info("Could not find valid interface matching %s: %s", spec, e)
            errors.append(str(e))
    for pattern in opts.iface_regex:
        try:
            return _by_regex(ipr, pattern)
        except LookupError as e:
            log.info("Could not find valid interface matching %s: %s", pattern, e)
    if opts.iface_can_reach:
        log.info("Determining interface to use based on given ifcanreach: %s",
                 opts.iface_can_reach)
        return _by_route(ipr, opts.iface_can_reach)
    if opts.iface or opts.iface_regex:
        raise Fatal("Failed to find interface to use that matches the interfaces and/or "
                    "regexes provided")
    if opts.public_ip:
        return _by_ip(ipr, IPv4Address(opts.public_ip)), IPv4Address(opts.public_ip)
    log.info("Determining IP address of default interface")
    return _by_route(ipr, None)


def lookup_ext_iface(ipr: Any, opts: Options) -> ExternalInterface:
    """Pick the external interface like upstream: --iface, --iface-regex, can-reach, default."""
    try:
        (index, name, mtu), addr = _candidate(ipr, opts)
    except (LookupError, ValueError) as e:
        raise Fatal(f"Failed to find any valid interface to use: {e}") from e
    if addr is None:
        addrs = _ipv4_addrs(ipr, index)
        if not addrs:
            raise Fatal(f"failed to find IPv4 address for interface {name}")
        addr = addrs[0]
    log.info("Using interface with name %s and address %s", name, addr)
    if not mtu:
        raise Fatal(f"failed to determine MTU for {addr} interface")
    ext = addr
    if opts.public_ip:
        try:
            ext = IPv4Address(opts.public_ip)
        except ValueError as e:
            raise Fatal(f"invalid public IP address: {opts.public_ip}") from e
        log.info("Using %s as external address", ext)
    else:
        log.info("Defaulting external address to interface address (%s)", addr)
    return ExternalInterface(name=name, index=index, mtu=mtu, iface_addr=addr, ext_addr=ext)


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------
def netlink_code(e: Exception) -> int:
    """The errno of a pyroute2 NetlinkError (0 for anything else)."""
    code = getattr(e, "code", 0)
    return code if isinstance(code, int) else 0


def ignore_missing(fn: Callable[[], Any], what: str) -> None:
    """Run a netlink delete; a missing object is fine, other errors are logged."""
    try:
        fn()
    except Exception as e:
        if netlink_code(e) not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
            log.error("%s failed: %s", what, e)


def random_mac(rng: random.Random | None = None) -> str:
    """A random locally administered unicast MAC, as upstream's mac.NewHardwareAddr."""
    b = bytearray((rng or random.SystemRandom()).getrandbits(8) for _ in range(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


class Backend:
    """Shared lease bookkeeping: programmed state converges to the leases in etcd."""

    type = ""

    def __init__(self, ipr: Any, ext: ExternalInterface, cfg: NetConfig) -> None:
        self.ipr = ipr
        self.ext = ext
        self.cfg = cfg
        self.programmed: dict[IPv4Network, Lease] = {}
        self.failures: dict[IPv4Network, str] = {}
        self.warned: set[IPv4Network] = set()
        self.swept = False

    @property
    def mtu(self) -> int:
        """FLANNEL_MTU."""
        return self.ext.mtu

    def prepare(self) -> LeaseAttrs:
        """Set up what must exist before the lease (devices); return our lease attributes."""
        raise NotImplementedError

    def configure(self, lease: Lease) -> None:
        """Finish setup once our subnet is known."""

    def add(self, lease: Lease) -> None:
        """Program the dataplane for one remote lease (idempotent)."""
        raise NotImplementedError

    def remove(self, lease: Lease) -> None:
        """Remove what add() programmed."""
        raise NotImplementedError

    def stale_routes(self, keep: set[IPv4Network]) -> list[dict[str, Any]]:
        """Routes a previous run left for subnets that are no longer leased."""
        return []

    def reconcile(self, leases: Iterable[Lease], own: IPv4Network) -> None:
        """Converge to `leases` (our own excluded); log additions and removals."""
        desired = {le.subnet: le for le in leases if le.subnet != own and self._accept(le)}
        for subnet, old in list(self.programmed.items()):
            if subnet not in desired or desired[subnet].attrs != old.attrs:
                log.info("Subnet removed: %s", subnet)
                self.remove(old)
                del self.programmed[subnet]
        for subnet, lease in desired.items():
            try:
                self.add(lease)
            except Exception as e:
                if self.failures.get(subnet) != str(e):  # log each distinct failure once
                    log.error("Error adding subnet %s via %s: %s", subnet,
                              lease.attrs.public_ip, e)
                self.failures[subnet] = str(e)
                continue
            self.failures.pop(subnet, None)
            if subnet not in self.programmed:
                log.info("Subnet added: %s via %s", subnet, lease.attrs.public_ip)
            self.programmed[subnet] = lease
        if not self.swept:
            self._sweep(set(desired) | {own})
            self.swept = True

    def _accept(self, lease: Lease) -> bool:
        if lease.attrs.backend_type == self.type:
            return True
        if lease.subnet not in self.warned:
            log.warning("Ignoring non-%s subnet %s: type=%s", self.type, lease.subnet,
                        lease.attrs.backend_type)
            self.warned.add(lease.subnet)
        return False

    def _sweep(self, keep: set[IPv4Network]) -> None:
        for route in self.stale_routes(keep):
            dst = f"{route.get('RTA_DST')}/{route['dst_len']}"
            log.info("Removing stale route to %s left by a previous run", dst)
            self._delete_route(dst)

    def _delete_route(self, dst: str) -> None:
        ignore_missing(lambda: self.ipr.route("del", dst=dst, table=MAIN_TABLE), "RouteDel")

    def _routes_in_network(self, keep: set[IPv4Network], oifs: set[int]) -> list[dict[str, Any]]:
        out = []
        for r in self.ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
            dst = r.get("RTA_DST")
            if not dst or r["dst_len"] != self.cfg.subnet_len or not r.get("RTA_GATEWAY"):
                continue
            subnet = IPv4Network(f"{dst}/{r['dst_len']}")
            if subnet.subnet_of(self.cfg.network) and subnet not in keep \
                    and r.get("RTA_OIF") in oifs:
                out.append(r)
        return out


class HostGwBackend(Backend):
    """host-gw: a route per remote subnet via the remote node's PublicIP."""

    type = "host-gw"

    def prepare(self) -> LeaseAttrs:
        """host-gw needs the public IP to be the interface's own (no NAT)."""
        if self.ext.ext_addr != self.ext.iface_addr:
            raise Fatal("your PublicIP differs from interface IP, meaning that probably you're "
                        "on a NAT, which is not supported by host-gw backend")
        return LeaseAttrs(public_ip=self.ext.ext_addr, backend_type=self.type)

    def add(self, lease: Lease) -> None:
        """ip route replace <subnet> via <PublicIP> dev <ext>."""
        self.ipr.route("replace", dst=str(lease.subnet), gateway=str(lease.attrs.public_ip),
                       oif=self.ext.index, table=MAIN_TABLE, proto=RTPROT_BOOT)

    def remove(self, lease: Lease) -> None:
        """Delete the route to a subnet that went away."""
        ignore_missing(lambda: self.ipr.route(
            "del", dst=str(lease.subnet), gateway=str(lease.attrs.public_ip),
            oif=self.ext.index, table=MAIN_TABLE), "RouteDel")

    def stale_routes(self, keep: set[IPv4Network]) -> list[dict[str, Any]]:
        """Gatewayed routes into the network on the external interface."""
        return self._routes_in_network(keep, {self.ext.index})


@dataclass(frozen=True)
class VxlanOptions:
    """Backend options of a vxlan network config."""

    vni: int = 1
    port: int = 0
    mtu: int = 0
    gbp: bool = False
    learning: bool = False
    direct_routing: bool = False

    @classmethod
    def from_backend(cls, backend: dict[str, Any]) -> VxlanOptions:
        """Read VNI, Port, MTU, GBP, Learning and DirectRouting (case-insensitive)."""
        b = lower_keys(backend)
        vni = b.get("vni")
        opts = cls(vni=1 if vni is None else int(vni),
                   port=int(b.get("port") or 0), mtu=int(b.get("mtu") or 0),
                   gbp=bool(b.get("gbp", False)), learning=bool(b.get("learning", False)),
                   direct_routing=bool(b.get("directrouting", False)))
        if not 0 <= opts.vni < (1 << 24):
            raise Fatal(f"error decoding VXLAN backend config: VNI {opts.vni} out of range")
        if not 0 <= opts.port < 65536:
            raise Fatal(f"error decoding VXLAN backend config: Port {opts.port} out of range")
        return opts


class VxlanBackend(Backend):
    """vxlan: kernel VXLAN device flannel.<VNI>, one route + neighbour + FDB entry per node."""

    type = "vxlan"

    def __init__(self, ipr: Any, ext: ExternalInterface, cfg: NetConfig) -> None:
        super().__init__(ipr, ext, cfg)
        self.opts = VxlanOptions.from_backend(cfg.backend)
        self.name = f"flannel.{self.opts.vni}"
        self.index = 0
        self.mac = ""
        log.info("VXLAN config: VNI=%d Port=%d GBP=%s Learning=%s DirectRouting=%s",
                 self.opts.vni, self.opts.port, str(self.opts.gbp).lower(),
                 str(self.opts.learning).lower(), str(self.opts.direct_routing).lower())

    @property
    def mtu(self) -> int:
        """Backend.MTU when set, else the external interface's MTU minus 50."""
        return self.opts.mtu or self.ext.mtu - ENCAP_OVERHEAD

    @property
    def port(self) -> int:
        """The UDP port (the kernel's 8472 when Port is 0)."""
        return self.opts.port or DEFAULT_VXLAN_PORT

    def prepare(self) -> LeaseAttrs:
        """Create (or reuse, keeping its MAC) the VXLAN device."""
        link = self._existing()
        if link is not None:
            problem = self._incompatible(link)
            if problem:
                log.warning("%r already exists with incompatible configuration: %s; "
                            "recreating device", self.name, problem)
                self.ipr.link("del", index=link["index"])
                link = None
        if link is None:
            link = self._create()
        self.index = link["index"]
        self.mac = str(link.get("IFLA_ADDRESS")).lower()
        with contextlib.suppress(OSError), \
                open(f"/proc/sys/net/ipv6/conf/{self.name}/accept_ra", "w") as f:
            f.write("0")
        return LeaseAttrs(public_ip=self.ext.ext_addr, backend_type=self.type,
                          backend_data=vxlan_backend_data(self.opts.vni, self.mac))

    def _existing(self) -> dict[str, Any] | None:
        links = self.ipr.get_links(ifname=self.name) if self.ipr.link_lookup(
            ifname=self.name) else []
        return links[0] if links else None

    def _incompatible(self, link: dict[str, Any]) -> str:
        info = link.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info else None
        if info is None or kind != "vxlan":
            return f"link type: vxlan vs {kind}"
        data = info.get("IFLA_INFO_DATA") or {}
        checks = (("vni", self.opts.vni, data.get("IFLA_VXLAN_ID")),
                  ("vtep (external) interface", self.ext.index, data.get("IFLA_VXLAN_LINK")),
                  ("vtep (external) IP", str(self.ext.iface_addr), data.get("IFLA_VXLAN_LOCAL")),
                  ("port", self.port, data.get("IFLA_VXLAN_PORT")))
        for what, want, have in checks:
            if have not in (None, 0, "") and have != want:
                return f"{what}: {want} vs {have}"
        if bool(data.get("IFLA_VXLAN_GBP")) != self.opts.gbp:
            return f"gbp: {self.opts.gbp} vs {not self.opts.gbp}"
        return ""

    def _create(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "ifname": self.name, "kind": "vxlan", "vxlan_id": self.opts.vni,
            "vxlan_link": self.ext.index, "vxlan_local": str(self.ext.iface_addr),
            "vxlan_port": self.port, "vxlan_learning": int(self.opts.learning),
            "address": random_mac(), "mtu": self.mtu,
        }
        if self.opts.gbp:
            kwargs["vxlan_gbp"] = True
        try:
            self.ipr.link("add", **kwargs)
        except Exception as e:
            raise Fatal(f"failed to create vxlan interface {self.name}: {e}") from e
        return self.ipr.get_links(ifname=self.name)[0]  # type: ignore[no-any-return]

    def configure(self, lease: Lease) -> None:
        """<subnet>.0/32 on the device (no broadcast routes), MTU, then up."""
        want = lease.subnet.network_address
        try:
            for a in self.ipr.get_addr(family=socket.AF_INET, index=self.index):
                have = IPv4Address(a.get("IFA_ADDRESS") or a.get("IFA_LOCAL"))
                if (have, a["prefixlen"]) != (want, 32):
                    self.ipr.addr("del", index=self.index, address=str(have),
                                  prefixlen=a["prefixlen"])
            if not self.ipr.get_addr(family=socket.AF_INET, index=self.index):
                self.ipr.addr("add", index=self.index, address=str(want), prefixlen=32)
            self.ipr.link("set", index=self.index, mtu=self.mtu)
            self.ipr.link("set", index=self.index, state="up")
        except Exception as e:
            raise Fatal(f"failed to configure interface {self.name}: {e}") from e

    def _direct(self, lease: Lease) -> bool:
        if not self.opts.direct_routing:
            return False
        try:
            routes = self.ipr.route("get", dst=str(lease.attrs.public_ip))
        except Exception as e:
            log.error("route get %s failed: %s", lease.attrs.public_ip, e)
            return False
        return bool(routes) and not routes[0].get("RTA_GATEWAY")

    def add(self, lease: Lease) -> None:
        """Neighbour, FDB entry, then the onlink route (or a direct route)."""
        sn = lease.subnet
        if self._direct(lease):
            log.debug("Adding direct route to subnet: %s PublicIP: %s", sn, lease.attrs.public_ip)
            self.ipr.route("replace", dst=str(sn), gateway=str(lease.attrs.public_ip),
                           table=MAIN_TABLE, proto=RTPROT_BOOT)
            return
        mac = self._vtep_mac(lease)
        self.ipr.neigh("replace", ifindex=self.index, dst=str(sn.network_address), lladdr=mac,
                       state=NUD_PERMANENT)
        self.ipr.fdb("replace", ifindex=self.index, lladdr=mac, dst=str(lease.attrs.public_ip),
                     state=NUD_PERMANENT, flags=NTF_SELF)
        self.ipr.route("replace", dst=str(sn), gateway=str(sn.network_address), oif=self.index,
                       flags=RTNH_F_ONLINK, table=MAIN_TABLE, proto=RTPROT_BOOT)

    def remove(self, lease: Lease) -> None:
        """Try to remove every entry; don't stop at the first failure."""
        sn = lease.subnet
        ignore_missing(lambda: self.ipr.route("del", dst=str(sn), table=MAIN_TABLE), "RouteDel")
        mac = (lease.attrs.backend_data or {}).get("VtepMAC")
        if not mac:
            return
        ignore_missing(lambda: self.ipr.neigh("del", ifindex=self.index,
                                              dst=str(sn.network_address), lladdr=mac),
                       "DelARP")
        ignore_missing(lambda: self.ipr.fdb("del", ifindex=self.index, lladdr=mac,
                                            dst=str(lease.attrs.public_ip)), "DelFDB")

    @staticmethod
    def _vtep_mac(lease: Lease) -> str:
        data = lower_keys(lease.attrs.backend_data or {})
        mac = data.get("vtepmac")
        if not isinstance(mac, str) or not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
            raise ValueError(f"error decoding subnet lease JSON: bad VtepMAC {mac!r}")
        return mac.lower()

    def stale_routes(self, keep: set[IPv4Network]) -> list[dict[str, Any]]:
        """Gatewayed routes into the network via flannel.N (and direct ones via the uplink)."""
        return self._routes_in_network(keep, {self.index, self.ext.index})


BACKENDS: dict[str, type[Backend]] = {"vxlan": VxlanBackend, "host-gw": HostGwBackend}


def make_backend(ipr: Any, ext: ExternalInterface, cfg: NetConfig) -> Backend:
    """The backend named in the config; anything else is fatal (no fallback)."""
    cls = BACKENDS.get(cfg.backend_type.lower())
    if cls is None:
        raise Fatal(f"Error fetching backend: unknown backend type: {cfg.backend_type} "
                    f"(this reference build implements {', '.join(BACKENDS)})")
    return cls(ipr, ext, cfg)


# --------------------------------------------------------------------------
# iptables (FLANNEL-POSTRTG masquerade, FLANNEL-FWD forward accept)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One iptables rule: table, chain and rule spec."""

    table: str
    chain: str
    spec: tuple[str, ...]


def masq_rules(network: IPv4Network, subnet: IPv4Network, random_fully: bool) -> list[Rule]:
    """Upstream's masqRules, in order."""
    net, pod = str(network), str(subnet)
    comment = ("-m", "comment", "--comment", "flanneld masq")
    masq = ("-j", "MASQUERADE", "--random-fully") if random_fully else ("-j", "MASQUERADE")
    post = "FLANNEL-POSTRTG"
    return [
        Rule("nat", "POSTROUTING", (*comment, "-j", post)),
        Rule("nat", post, ("-m", "mark", "--mark", KUBE_PROXY_MARK, *comment, "-j", "RETURN")),
        Rule("nat", post, ("-s", pod, "-d", net, *comment, "-j", "RETURN")),
        Rule("nat", post, ("-s", net, "-d", pod, *comment, "-j", "RETURN")),
        Rule("nat", post, ("!", "-s", net, "-d", pod, *comment, "-j", "RETURN")),
        Rule("nat", post, ("-s", net, "!", "-d", "224.0.0.0/4", *comment, *masq)),
        Rule("nat", post, ("!", "-s", net, "-d", net, *comment, *masq)),
    ]


def forward_rules(network: IPv4Network) -> list[Rule]:
    """Upstream's forwardRules."""
    comment = ("-m", "comment", "--comment", "flanneld forward")
    return [
        Rule("filter", "FORWARD", (*comment, "-j", "FLANNEL-FWD")),
        Rule("filter", "FLANNEL-FWD", ("-s", str(network), *comment, "-j", "ACCEPT")),
        Rule("filter", "FLANNEL-FWD", ("-d", str(network), *comment, "-j", "ACCEPT")),
    ]


def restore_payload(rules: Iterable[tuple[str, Rule]]) -> str:
    """An iptables-restore --noflush payload for (action, rule) pairs, grouped per table."""
    tables: dict[str, list[str]] = {}
    for action, rule in rules:
        words = [action, rule.chain, *(f'"{w}"' if " " in w else w for w in rule.spec)]
        tables.setdefault(rule.table, []).append(" ".join(words))
    return "".join(f"*{t}\n" + "\n".join(lines) + "\nCOMMIT\n" for t, lines in tables.items())


def parse_iptables_version(text: str) -> tuple[int, ...]:
    """'iptables v1.8.9 (nf_tables)' -> (1, 8, 9)."""
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


class IPTables:
    """Rules programmed by exec'ing iptables / iptables-restore (-w), as go-iptables does."""

    def __init__(self, runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run):
        self.run = runner
        self.rules: list[Rule] = []

    def _ipt(self, *args: str, stdin: str | None = None, cmd: str = "iptables"
             ) -> subprocess.CompletedProcess[str]:
        argv = [cmd, "-w", *args]
        try:
            return self.run(argv, input=stdin, capture_output=True, text=True, check=False)
        except OSError as e:  # binary missing: fail the call, as go-iptables would
            return subprocess.CompletedProcess(argv, 127, "", f"{cmd}: {e}")

    def has_random_fully(self) -> bool:
        """go-iptables: --random-fully needs iptables >= 1.6.2."""
        try:
            res = self.run(["iptables", "--version"], capture_output=True, text=True, check=False)
        except OSError:
            return False
        return parse_iptables_version(res.stdout + res.stderr) >= (1, 6, 2)

    def exists(self, rule: Rule) -> bool:
        """iptables -C."""
        return self._ipt("-t", rule.table, "-C", rule.chain, *rule.spec).returncode == 0

    def chain_exists(self, table: str, chain: str) -> bool:
        """iptables -S <chain> succeeds only for an existing chain."""
        return self._ipt("-t", table, "-S", chain).returncode == 0

    def clear_chain(self, table: str, chain: str) -> None:
        """Create the chain, or flush it when it exists (go-iptables ClearChain)."""
        res = self._ipt("-t", table, "-N", chain)
        if res.returncode != 0:
            res = self._ipt("-t", table, "-F", chain)
        if res.returncode != 0:
            log.error("Failed to setup IPTables. Error on creating the chain: %s",
                      res.stderr.strip())

    def all_exist(self, rules: list[Rule]) -> bool:
        """Every chain and rule present."""
        chains = {(r.table, r.chain) for r in rules if r.chain.startswith("FLANNEL-")}
        if not all(self.chain_exists(t, c) for t, c in chains):
            return False
        return all(self.exists(r) for r in rules)

    def bootstrap(self, rules: list[Rule]) -> None:
        """Delete what exists and append all rules in order, in one iptables-restore."""
        for table, chain in {(r.table, r.chain) for r in rules if r.chain.startswith("FLANNEL-")}:
            if not self.chain_exists(table, chain):
                self.clear_chain(table, chain)
        pairs: list[tuple[str, Rule]] = []
        for rule in rules:
            if self.exists(rule):
                pairs.append(("-D", rule))
            pairs.append(("-A", rule))
        self._restore(pairs)

    def teardown(self, rules: list[Rule]) -> None:
        """Delete the rules that exist (chains stay, as upstream)."""
        self._restore([("-D", r) for r in rules if self.exists(r)])

    def _restore(self, pairs: list[tuple[str, Rule]]) -> None:
        if not pairs:
            return
        res = self._ipt("--noflush", stdin=restore_payload(pairs), cmd="iptables-restore")
        if res.returncode != 0:
            raise Fatal(f"failed to apply partial iptables-restore: {res.stderr.strip()}")

    def setup(self, table: str, chain: str, rules: list[Rule]) -> None:
        """CreateIP4Chain + bootstrap; the rules are then kept by ensure()."""
        self.clear_chain(table, chain)
        try:
            self.bootstrap(rules)
        except Fatal as e:
            log.error("Failed to bootstrap IPTables: %s", e)
        self.rules.extend(rules)

    def ensure(self) -> None:
        """Recreate everything, in order, when any rule went missing."""
        try:
            if self.rules and not self.all_exist(self.rules):
                log.info("Some iptables rules are missing; deleting and recreating rules")
                self.bootstrap(self.rules)
        except Exception as e:
            log.error("Failed to ensure iptables rules: %s", e)

    def cleanup(self) -> None:
        """Upstream tears its rules down when flanneld exits."""
        if not self.rules:
            return
        log.info("iptables (ipv4): cleaning-up before exiting flannel...")
        try:
            self.teardown(self.rules)
        except Exception as e:
            log.error("Failed to tear down IPTables: %s", e)


# --------------------------------------------------------------------------
# healthz
# --------------------------------------------------------------------------
class HealthzHandler(http.server.BaseHTTPRequestHandler):
    """GET /healthz: 200 "flanneld is running" once the lease is held and the backend is up."""

    ready: threading.Event = threading.Event()

    def do_GET(self) -> None:
        """Answer /healthz; anything else is 404."""
        if self.path.split("?")[0] != "/healthz":
            self.send_error(404)
            return
        ok = self.ready.is_set()
        body = HEALTHZ_BODY if ok else b"flanneld is starting"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the access log out of flanneld's log."""


def start_healthz(ip: str, port: int, ready: threading.Event) -> http.server.HTTPServer:
    """Serve /healthz in a daemon thread."""
    log.info("Start healthz server on %s:%d", ip, port)
    handler = type("Healthz", (HealthzHandler,), {"ready": ready})
    server = http.server.ThreadingHTTPServer((ip, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    return server


# --------------------------------------------------------------------------
# the daemon
# --------------------------------------------------------------------------
class Flanneld:
    """flanneld's lifecycle: config, interface, backend, lease, rules, subnet file, watch."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.etcd = Etcd(opts.etcd_endpoints)
        self.registry = Registry(self.etcd, opts.etcd_prefix)
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.iptables = IPTables()
        self.watch: Watch | None = None
        self.lease: Lease | None = None
        self.renew_at = 0.0

    def handle_signal(self, signum: int, _frame: Any) -> None:
        """SIGTERM/SIGINT: stop promptly; the lease is kept (upstream keeps it)."""
        if not self.stop.is_set():
            log.info("shutdownHandler sent cancel signal (%s)...", signal.Signals(signum).name)
        self.stop.set()
        watch = self.watch
        if watch is not None:
            watch.cancel()

    def run(self) -> int:
        """Start, serve until signalled; 0 on a clean stop, 1 on a fatal error."""
        log.info("Created subnet manager: Etcd Local Manager with Previous Subnet: %s",
                 self.previous_subnet() or "None")
        log.info("Installing signal handlers")
        signal.signal(signal.SIGTERM, self.handle_signal)
        signal.signal(signal.SIGINT, self.handle_signal)
        if self.opts.healthz_port > 0:
            try:
                start_healthz(self.opts.healthz_ip, self.opts.healthz_port, self.ready)
            except OSError as e:
                raise Fatal(f"Start healthz server error. {e}") from e
        cfg = self.wait_config()
        if cfg is None:
            return 0
        check_br_netfilter(cfg)
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            backend, lease = self.start_backend(ipr, cfg)
            self.setup_iptables(cfg, lease)
            self.write_subnet_file(cfg, lease, backend.mtu)
            log.info("Running backend.")
            self.ready.set()
            self.loop(backend, lease.subnet)
        self.iptables.cleanup()
        log.info("Exiting cleanly...")
        return 0

    def previous_subnet(self) -> IPv4Network | None:
        """FLANNEL_SUBNET of an earlier run's subnet file."""
        return env_cidr(read_subnet_file(self.opts.subnet_file), "FLANNEL_SUBNET")

    def wait_config(self) -> NetConfig | None:
        """Retry every second until etcd has a valid <prefix>/config (None when stopped)."""
        while not self.stop.is_set():
            try:
                cfg = parse_config(self.registry.network_config())
            except (ConfigError, EtcdError) as e:
                log.error("Couldn't fetch network config: %s", e)
            else:
                log.info("Found network config - Backend type: %s", cfg.backend_type)
                if cfg.enable_ipv6:
                    raise Fatal("EnableIPv6 is not supported by this reference build")
                return cfg
            self.stop.wait(1.0)
        return None

    def start_backend(self, ipr: Any, cfg: NetConfig) -> tuple[Backend, Lease]:
        """Interface, backend device, lease, then the device's address."""
        ext = lookup_ext_iface(ipr, self.opts)
        backend = make_backend(ipr, ext, cfg)
        attrs = backend.prepare()
        lease = self.acquire(cfg, attrs)
        backend.configure(lease)
        return backend, lease

    def acquire(self, cfg: NetConfig, attrs: LeaseAttrs) -> Lease:
        """acquire_lease, retrying while etcd is unreachable."""
        while True:
            try:
                lease = acquire_lease(self.registry, cfg, attrs, self.previous_subnet())
            except EtcdError as e:
                log.error("failed to acquire lease: %s (retrying)", e)
                if self.stop.wait(1.0):
                    raise Stopped from e
                continue
            self.lease = lease
            self.renew_at = time.monotonic() + LEASE_TTL - self.opts.subnet_lease_renew_margin * 60
            return lease

    def setup_iptables(self, cfg: NetConfig, lease: Lease) -> None:
        """Masquerade (--ip-masq) and forward accept (--iptables-forward-rules) chains."""
        if self.opts.ip_masq:
            self.recycle_masq_rules(cfg, lease)
            log.info("Setting up masking rules")
            rules = masq_rules(cfg.network, lease.subnet, self.iptables.has_random_fully())
            self.iptables.setup("nat", "FLANNEL-POSTRTG", rules)
        if self.opts.iptables_forward_rules:
            log.info("Changing default FORWARD chain policy to ACCEPT")
            self.iptables.setup("filter", "FLANNEL-FWD", forward_rules(cfg.network))

    def recycle_masq_rules(self, cfg: NetConfig, lease: Lease) -> None:
        """Delete masquerade rules of an earlier network/subnet (upstream's recycleIPTables)."""
        prev = read_subnet_file(self.opts.subnet_file)
        prev_net, prev_sn = env_cidr(prev, "FLANNEL_NETWORK"), env_cidr(prev, "FLANNEL_SUBNET")
        if prev_net is None or prev_sn is None or (prev_net, prev_sn) == (cfg.network,
                                                                         lease.subnet):
            return
        log.info("Current network or subnet (%s, %s) is not equal to previous one (%s, %s), "
                 "trying to recycle old iptables rules", cfg.network, lease.subnet,
                 prev_net, prev_sn)
        self.iptables.teardown(masq_rules(prev_net, prev_sn, self.iptables.has_random_fully()))

    def write_subnet_file(self, cfg: NetConfig, lease: Lease, mtu: int) -> None:
        """Write the subnet file atomically (a failure is logged, as upstream)."""
        text = render_subnet_file(cfg.network, lease.subnet, mtu, self.opts.ip_masq)
        try:
            write_file_atomic(self.opts.subnet_file, text)
        except OSError as e:
            log.warning("Failed to write subnet file: %s", e)
        else:
            log.info("Wrote subnet file to %s", self.opts.subnet_file)

    def loop(self, backend: Backend, own: IPv4Network) -> None:
        """Converge on every lease change (etcd watch) and at least every resync period."""
        period = max(1, self.opts.iptables_resync)
        log.info("Waiting for %s to renew lease", _duration(self.renew_at - time.monotonic()))
        while not self.stop.is_set():
            self.maybe_renew()
            revision = self.sync(backend, own)
            self.iptables.ensure()
            if self.stop.is_set():
                break
            if revision is None:
                self.stop.wait(1.0)
                continue
            self.wait_change(revision + 1, min(period, max(0.1, self.renew_at - time.monotonic())))

    def sync(self, backend: Backend, own: IPv4Network) -> int | None:
        """List leases and converge; None when etcd is unreachable."""
        try:
            leases, revision = self.registry.leases()
        except EtcdError as e:
            log.error("Failed to retrieve subnet leases: %s", e)
            return None
        if not any(le.subnet == own for le in leases):
            log.error("Lease has been revoked. Shutting down daemon.")
            self.stop.set()
            return revision
        backend.reconcile(leases, own)
        return revision

    def wait_change(self, revision: int, timeout: float) -> None:
        """Block on an etcd watch of the subnets until a change or `timeout`."""
        watch = self.etcd.watch_prefix(self.registry.subnets_prefix, revision, timeout)
        self.watch = watch
        try:
            if not self.stop.is_set():
                next(iter(watch), None)
        except TimeoutError:
            pass
        except EtcdCompacted:
            log.warning("Watch of subnet leases failed because etcd index outside history window")
        except EtcdError as e:
            log.warning("etcd watch of %s failed (%s), re-listing", self.registry.subnets_prefix,
                        e)
            self.stop.wait(1.0)
        finally:
            self.watch = None
            watch.cancel()

    def maybe_renew(self) -> None:
        """Re-grant the lease `subnet-lease-renew-margin` minutes before it expires."""
        if self.lease is None or time.monotonic() < self.renew_at:
            return
        try:
            self.lease = self.registry.update(self.lease.subnet, self.lease.attrs, LEASE_TTL,
                                              self.lease.lease_id)
        except EtcdError as e:
            log.error("Error renewing lease (trying again in 1 min): %s", e)
            self.renew_at = time.monotonic() + RENEW_RETRY
            return
        self.renew_at = time.monotonic() + LEASE_TTL - self.opts.subnet_lease_renew_margin * 60
        log.info("Lease renewed, new expiration: %s",
                 datetime.datetime.now(datetime.UTC)
                 + datetime.timedelta(seconds=LEASE_TTL))


def _duration(seconds: float) -> str:
    """Go's time.Duration String for whole seconds, e.g. 23h0m0s."""
    s = max(0, int(seconds))
    return f"{s // 3600}h{s % 3600 // 60}m{s % 60}s"


def check_br_netfilter(cfg: NetConfig) -> None:
    """Upstream exits when br_netfilter is missing (unless EnableNFTables)."""
    if cfg.enable_nftables:
        log.warning("EnableNFTables is set: this reference build still programs iptables rules")
        return
    try:
        os.stat(BR_NETFILTER)
    except OSError as e:
        raise Fatal(f"Failed to check br_netfilter: stat {BR_NETFILTER}: {e.strerror.lower()}"
                    if e.strerror else f"Failed to check br_netfilter: {e}") from e


def main(argv: Sequence[str] | None = None) -> int:
    """flanneld's entrypoint."""
    opts = parse_options(sys.argv[1:] if argv is None else argv, dict(os.environ))
    setup_logging(opts.v)
    if opts.version:
        print(f"{UPSTREAM_VERSION}-testbed-reference-{REFERENCE_VERSION}", file=sys.stderr)
        return 0
    log.info("CLI flags config: %s", describe_options(opts))
    if not 0 < opts.subnet_lease_renew_margin < 24 * 60:
        log.error("Invalid subnet-lease-renew-margin option, out of acceptable range")
        return 1
    if opts.kube_subnet_mgr:
        log.error("--kube-subnet-mgr is not supported by this reference build (etcd mode only)")
        return 1
    if opts.public_ipv6:
        log.warning("--public-ipv6 ignored: this reference build is IPv4 only")
    try:
        return Flanneld(opts).run()
    except Stopped:
        return 0
    except Fatal as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
