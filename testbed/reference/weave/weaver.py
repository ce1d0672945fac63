"""`/home/weave/weaver`: the Weave Net router of the reference build, with upstream's flags.

    weaver --port=6783 --datapath=datapath --name=<mac> --nickname=<node>
           --http-addr=127.0.0.1:6784 --docker-api= --no-dns --db-prefix=/weavedb/weave-net
           --ipalloc-range=10.32.0.0/12 --ipalloc-init consensus=N --conn-limit=200
           [--mtu N] PEER...

Start-up follows upstream's order: pick the peer name, try the Open vSwitch datapath and say
why it is skipped, create bridge `weave` (MAC = peer name), iptables rules, re-expose, IPAM,
the mesh to the peers, then the HTTP API. Flags upstream has that need Docker, the Weave Cloud
discovery service or NaCl encryption are refused or ignored with a log line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from testbed.reference.weave import (
    BRIDGE,
    DATAPATH_NAME,
    DEFAULT_MTU,
    VERSION,
    VXLAN_DEVICE,
    VXLAN_PORT,
    VXLAN_VNI,
    api,
    datapath,
)
from testbed.reference.weave.ipam import Allocator, IpamError, split
from testbed.reference.weave.mesh import Conn, Mesh

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}

_STRING_FLAGS = {
    "host": "", "name": "", "nickname": "", "password": "", "log-level": "info", "profile": "",
    "http-addr": "", "status-addr": "", "metrics-addr": "", "ipalloc-init": "",
    "ipalloc-range": "", "ipalloc-default-subnet": "", "docker-api": "", "dns-domain": "",
    "dns-listen-address": "", "dns-effective-listen-address": "", "dns-fallback-timeout": "",
    "resolv-conf": "", "datapath": "", "trusted-subnets": "", "db-prefix": "/weavedb/weave",
    "proc-path": "/proc", "host-root": "", "peer-discovery-url": "", "token": "",
    "advertise-address": "", "weave-bridge": BRIDGE, "docker-bridge": "", "iface": "",
    "plugin-socket": "", "plugin-mesh-socket": "",
}
_INT_FLAGS = {"port": 6783, "min-protocol-version": 1, "conn-limit": 30, "bufsz": 8, "mtu": 0,
              "dns-ttl": 1}
_BOOL_FLAGS = ("version", "resume", "expect-npc", "pkt-debug", "no-discovery", "no-dns",
               "no-fastdp", "awsvpc", "plugin", "plugin-v2", "plugin-v2-multicast",
               "no-masq-local")


def _normalise(argv: list[str]) -> list[str]:
    """mflag accepts `-flag` as well as `--flag`, and `--bool=true|false`."""
    out: list[str] = []
    for arg in argv:
        if re.match(r"^-[a-z]", arg):
            arg = "-" + arg
        name, eq, value = arg.partition("=")
        if eq and name[2:] in _BOOL_FLAGS:
            if value.lower() in ("1", "t", "true"):
                out.append(name)
            continue
        out.append(arg)
    return out


def parser() -> argparse.ArgumentParser:
    """Upstream weaver's flag set (prog/weaver/main.go)."""
    p = argparse.ArgumentParser(prog="weave", allow_abbrev=False,
                                description="Weave Net router (testbed reference build)")
    for flag, default in _STRING_FLAGS.items():
        p.add_argument(f"--{flag}", default=default)
    for flag, number in _INT_FLAGS.items():
        p.add_argument(f"--{flag}", type=int, default=number)
    for flag in _BOOL_FLAGS:
        p.add_argument(f"--{flag}", action="store_true")
    p.add_argument("peers", nargs="*")
    return p


@dataclass
class Config:
    """Parsed flags, with the IPAM mode split out."""

    opts: argparse.Namespace
    peers: list[str]
    set_flags: dict[str, str] = field(default_factory=dict)
    quorum: int = 0
    seed: list[str] = field(default_factory=list)
    observer: bool = False


def parse(argv: list[str]) -> Config:
    """Flags -> Config; exits 2 with a message on bad input, as mflag does."""
    args = _normalise(argv)
    opts = parser().parse_args(args)
    set_flags = {}
    it = iter(args)
    for arg in it:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if not eq:
                value = "true" if name in _BOOL_FLAGS else next(it, "")
            set_flags[name] = value
    cfg = Config(opts=opts, peers=list(opts.peers), set_flags=set_flags)
    mode, _, param = opts.ipalloc_init.partition("=")
    if mode == "consensus":
        cfg.quorum = int(param) if param else len(cfg.peers) + 1
    elif mode == "seed":
        cfg.seed = [s for s in param.split(",") if s]
        if not cfg.seed:
            raise SystemExit("weave: Unable to parse --ipalloc-init: seed mode requires peer "
                             "name list")
    elif mode == "observer":
        cfg.observer = True
    elif mode:
        raise SystemExit(f"weave: Unable to parse --ipalloc-init: unknown mode: {mode}")
    else:
        cfg.quorum = len(cfg.peers) + 1
    if (opts.ipalloc_init or opts.ipalloc_default_subnet) and not opts.ipalloc_range:
        raise SystemExit("weave: --ipalloc-init or --ipalloc-default-subnet specified without "
                         "--ipalloc-range.")
    return cfg


class Logger:
    """Upstream's log line shape: `INFO: 2024/01/31 10:00:00.123456 message`."""

    def __init__(self, level: str) -> None:
        self.level = LEVELS.get(level, 1)
        self.lock = threading.Lock()

    def _write(self, tag: str, level: int, msg: str) -> None:
        if level < self.level:
            return
        now = time.time()
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}"
        with self.lock:
            sys.stderr.write(f"{tag}: {stamp} {msg}\n")
            sys.stderr.flush()

    def info(self, msg: str) -> None:
        self._write("INFO", 1, msg)

    def warn(self, msg: str) -> None:
        self._write("WARN", 2, msg)

    def error(self, msg: str) -> None:
        self._write("ERRO", 3, msg)

    def debug(self, msg: str) -> None:
        self._write("DEBU", 0, msg)


def random_mac() -> str:
    """A locally administered unicast MAC (upstream's RandomMAC)."""
    b = [random.randrange(256) for _ in range(6)]
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


class Weaver:
    """The running router: bridge, mesh, IPAM and the HTTP API (implements api.Router)."""

    def __init__(self, cfg: Config, log: Logger) -> None:
        self.cfg, self.opts, self.log = cfg, cfg.opts, log
        self.stop = threading.Event()
        self.expose_lock = threading.Lock()  # concurrent first pods expose the bridge once
        self.ready = False
        self.fastdp_reason = ""
        self.bridge: datapath.Bridge | None = None
        self.ipam: Allocator | None = None
        self.mtu = self.opts.mtu or DEFAULT_MTU
        self.name = ""
        self.nickname = self.opts.nickname or socket.gethostname()
        self.mesh: Mesh | None = None

    # -- start-up -----------------------------------------------------------------------

    def _peer_name(self) -> str:
        name = str(self.opts.name).lower()
        if not name:
            stored = self._stored_name()
            name = stored or _bridge_mac(self.opts.weave_bridge) or random_mac()
        if not MAC_RE.match(name) or int(name[:2], 16) & 1:
            raise SystemExit(f"weave: invalid --name {self.opts.name!r}: it must be a unicast "
                             "MAC address such as 7a:31:8f:00:11:22")
        return name

    def _stored_name(self) -> str:
        path = str(self.opts.db_prefix) + "data.json"
        try:
            with open(path) as f:
                return str(json.load(f).get("peer_name") or "")
        except (OSError, ValueError):
            return ""

    def _refuse_unsupported(self) -> None:
        o = self.opts
        if o.password or os.environ.get("WEAVE_PASSWORD"):
            raise SystemExit("weave: --password (encryption) is not implemented by the testbed "
                             "reference build; run without it or use the upstream image")
        if o.awsvpc:
            raise SystemExit("weave: --awsvpc is not implemented by the testbed reference build")
        if o.token:
            self.log.warn("Ignoring --token: the reference build never contacts a peer "
                          "discovery service")
        if o.docker_api:
            self.log.warn(f"Ignoring --docker-api={o.docker_api}: the reference build does not "
                          "watch Docker (upstream uses it to free addresses of dead containers)")
        if not o.no_dns:
            self.log.warn("weaveDNS is not implemented by the reference build; running as if "
                          "--no-dns was given")
        if o.plugin or o.plugin_v2:
            self.log.warn("Ignoring --plugin/--plugin-v2: no Docker plugin in the reference "
                          "build")

    def start(self) -> None:
        """Bring everything up; raises SystemExit with upstream-like messages on fatal errors."""
        o = self.opts
        self.log.info("Command line options: map[" + " ".join(
            f"{k}:{'<elided>' if k == 'password' else v}"
            for k, v in sorted(self.cfg.set_flags.items())) + "]")
        self.log.info(f"weave  {VERSION}")
        self._refuse_unsupported()
        self.name = self._peer_name()
        if o.no_fastdp or not o.datapath:
            self.fastdp_reason = "fast datapath disabled (--no-fastdp or no --datapath)"
        else:
            reason = datapath.fastdp_unavailable()
            self.fastdp_reason = (f"bridge not supported: {reason}" if reason else
                                  "the reference build does not drive Open vSwitch")
        self.log.warn(f'Skipping bridge creation of "bridged_fastdp" due to: '
                      f"{self.fastdp_reason}")
        self.log.info("fastdp is unavailable; using the reference datapath: kernel VXLAN "
                      f"{VXLAN_DEVICE} (VNI {VXLAN_VNI}, UDP {VXLAN_PORT}) on bridge "
                      f"{o.weave_bridge!r} (upstream would fall back to sleeve)")
        try:
            self.bridge = datapath.ensure_bridge(self.name, self.mtu, o.weave_bridge)
            self.log.info(f"Bridge type is {DATAPATH_NAME}: {self.bridge.describe()}, "
                          f"mtu {self.mtu}")
            http_port = int(o.http_addr.rpartition(":")[2]) if o.http_addr else 6784
            datapath.configure_iptables(o.weave_bridge, http_port, o.expect_npc)
            datapath.reexpose(o.expect_npc, self.log.info, o.weave_bridge)
        except datapath.DatapathError as e:
            raise SystemExit(f"weave: {e}") from e
        if o.ipalloc_range:
            self._start_ipam()
        self.mesh = Mesh(self.name, self.nickname, o.port, o.conn_limit, not o.no_discovery,
                         self.log.info, o.host)
        self.mesh.on_established = self._established
        self.mesh.on_lost = self._lost
        self.mesh.on_peers = self._peers
        self.mesh.ring = lambda: self.ipam.ring_doc() if self.ipam else None
        self.mesh.on_ring = self._ring
        self.mesh.conn_attrs = lambda: {"name": DATAPATH_NAME, "mtu": self.mtu}
        self.log.info(f"Our name is {self.name}({self.nickname})")
        try:
            self.mesh.start(self.cfg.peers)
        except OSError as e:
            raise SystemExit(f"weave: listening on TCP port {o.port}: {e}") from e
        self.log.info(f"Launch detected - using supplied peer list: {self.cfg.peers}")
        for addr, ro in ((o.http_addr, False), (o.status_addr, True)):
            if not addr:
                continue
            try:
                api.serve(addr, self, self.log.info, read_only=ro)
            except (OSError, ValueError) as e:
                raise SystemExit(f"weave: HTTP on {addr}: {e}") from e
            what = "status" if ro else "HTTP control messages"
            self.log.info(f"Listening for {what} on {addr}")
        self.ready = True

    def _start_ipam(self) -> None:
        o = self.opts
        try:
            self.ipam = Allocator(o.ipalloc_range, self.name, self.nickname,
                                  self.cfg.quorum or 1, o.db_prefix + "data.json",
                                  o.ipalloc_default_subnet or None)
        except (IpamError, ValueError, OSError) as e:
            raise SystemExit(f"weave: IPAM: {e}") from e
        if self.cfg.seed and not self.ipam.ready():
            self.ipam.adopt([{"start": en.start, "end": en.end, "peer": en.peer,
                              "nickname": en.nickname}
                             for en in split(self.ipam.universe, dict.fromkeys(self.cfg.seed,
                                                                               ""))])
        mode = ("observer" if self.cfg.observer else f"seed {self.cfg.seed}" if self.cfg.seed
                else f"consensus among {self.cfg.quorum} peers")
        self.log.info(f"[allocator {self.name}] Initialising with persisted data"
                      if self.ipam.ready() else
                      f"[allocator {self.name}] Initialising via deferred consensus ({mode})")

    # -- mesh hooks ---------------------------------------------------------------------

    def _established(self, conn: Conn) -> None:
        if self.bridge is not None:
            try:
                datapath.flood_to(self.bridge, conn.remote_ip, True)
            except datapath.DatapathError as e:
                self.log.error(f"VXLAN flood entry for {conn.remote_ip}: {e}")

    def _lost(self, conn: Conn) -> None:
        if self.bridge is not None:
            try:
                datapath.flood_to(self.bridge, conn.remote_ip, False)
            except datapath.DatapathError as e:
                self.log.error(f"removing VXLAN flood entry for {conn.remote_ip}: {e}")

    def _peers(self, known: dict[str, str], reachable: set[str]) -> None:
        if self.ipam is None or self.cfg.observer or self.cfg.seed:
            return
        if self.ipam.peers_known(known, reachable):
            owners = ", ".join(f"{e['peer']}({e['nickname']})"
                               for e in self.ipam.ring_doc() or [])
            self.log.info(f"[allocator {self.name}]: Decided to split the range among: "
                          f"{owners}")

    def _ring(self, doc: Any) -> None:
        if self.ipam is None:
            return
        try:
            if self.ipam.adopt(doc):
                self.log.info(f"[allocator {self.name}]: Adopted the ring a peer decided")
        except ValueError as e:
            self.log.warn(f"[allocator {self.name}]: ignoring a peer's ring: {e}")

    # -- api.Router -----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """GET /report: upstream's WeaveStatus JSON plus the reference datapath facts."""
        assert self.mesh is not None and self.bridge is not None
        router = self.mesh.status()
        router.update(Interface=self.bridge.describe(), CaptureStats=None, MACs=None,
                      Datapath=DATAPATH_NAME)
        doc: dict[str, Any] = {
            "Ready": self.ready, "Version": VERSION,
            "VersionCheck": {"Enabled": False, "Success": False, "NewVersion": "",
                             "NextCheckAt": "0001-01-01T00:00:00Z"},
            "Router": router,
            "Datapath": {"Name": DATAPATH_NAME, "Bridge": self.bridge.name,
                         "Device": VXLAN_DEVICE, "VNI": VXLAN_VNI, "Port": VXLAN_PORT,
                         "MTU": self.mtu, "FastdpSkipped": self.fastdp_reason,
                         "FloodTo": datapath.flood_targets(self.bridge),
                         "BridgeAddresses": datapath.bridge_addresses(self.bridge.name)},
        }
        if self.ipam is not None:
            doc["IPAM"] = self.ipam.status()
        return doc

    def _ipam(self) -> Allocator:
        if self.ipam is None:
            raise api.ApiError("IPAM is not enabled (no --ipalloc-range)", 404)
        return self.ipam

    def allocate(self, ident: str, subnet: str | None) -> str:
        """POST /ip/<id>[/<subnet>]."""
        try:
            return self._ipam().allocate(ident, subnet)
        except IpamError as e:
            raise api.ApiError(str(e), e.status) from e

    def claim(self, ident: str, cidr: str) -> None:
        """PUT /ip/<id>/<ip>/<prefixlen>."""
        try:
            self._ipam().claim(ident, cidr)
        except IpamError as e:
            raise api.ApiError(f"Unable to claim: {e}", e.status) from e

    def lookup(self, ident: str, subnet: str | None) -> list[str]:
        """GET /ip/<id>."""
        try:
            return self._ipam().lookup(ident, subnet)
        except IpamError as e:
            raise api.ApiError(str(e), e.status) from e

    def release(self, ident: str, ip: str | None) -> None:
        """DELETE /ip/<id>[/<ip>]."""
        try:
            if ip is None:
                self._ipam().delete(ident)
            else:
                self._ipam().free(ident, ip)
        except IpamError as e:
            raise api.ApiError(str(e) if ip is None else f"Unable to free: {e}", e.status) from e

    def expose(self, cidr: str, skip_nat: bool) -> None:
        """POST /expose/<ip>/<prefixlen>."""
        try:
            ipaddress.IPv4Interface(cidr)
            with self.expose_lock:
                datapath.expose(cidr, self.opts.expect_npc, skip_nat, self.opts.weave_bridge)
        except ValueError as e:
            raise api.ApiError(f"unable to parse ip addr: {e}") from e
        except datapath.DatapathError as e:
            raise api.ApiError(f"unable to expose: {e}", 500) from e
        self.log.info(f"Exposed {cidr} on bridge {self.opts.weave_bridge!r}")

    def connect(self, peers: list[str], replace: bool) -> None:
        """POST /connect."""
        assert self.mesh is not None
        self.mesh.connect(peers, replace)

    def forget(self, peers: list[str]) -> None:
        """POST /forget."""
        assert self.mesh is not None
        self.mesh.forget(peers)


def _bridge_mac(name: str) -> str:
    try:
        with open(f"/sys/class/net/{name}/address") as f:
            return f.read().strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT."""
    cfg = parse(sys.argv[1:] if argv is None else argv)
    if cfg.opts.version:
        print(f"weave {VERSION}")
        return 0
    log = Logger(cfg.opts.log_level)
    weaver = Weaver(cfg, log)

    def stop(signum: int, _frame: Any) -> None:
        log.info(f"=== received {signal.Signals(signum).name} ===")
        weaver.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        weaver.start()
    except SystemExit as e:
        log.error(str(e.code))
        return 1
    weaver.stop.wait()
    if weaver.mesh is not None:
        weaver.mesh.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
