"""The peer mesh: TCP connections to the peer list, a hello each way, then gossip heartbeats.

Wire format: one JSON object per line. `hello` names the sender (name, nickname, uid, the
address it listens on); `gossip` carries the sender's view of every peer (its connections, a
version that the origin bumps every heartbeat) and the IPAM ring once decided. A connection is
established when the hello has been read. Two peers that dial each other at once keep the
connection dialled by the peer with the smaller name, so each pair ends with one connection
(upstream mesh also keeps one connection per pair). Upstream's protocol is the weaveworks/mesh
binary protocol with a crypto handshake; this one is plain JSON and not interoperable with it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.reference.weave import PROTOCOL, PROTOCOL_VERSION

HEARTBEAT_S = 2.0
IDLE_TIMEOUT_S = 15.0
HELLO_TIMEOUT_S = 10.0
PEER_GC_S = 30.0
RETRY_MIN_S, RETRY_MAX_S = 1.0, 20.0
MAX_LINE = 1 << 20
Log = Callable[[str], None]


def split_address(addr: str, default_port: int) -> tuple[str, int]:
    """`ip`, `ip:port` or `host:port` -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return addr, default_port
    return host, int(port)


@dataclass
class Conn:
    """One TCP connection to a peer."""

    sock: socket.socket
    address: str          # the remote end as seen on the socket
    outbound: bool
    name: str = ""
    nickname: str = ""
    uid: str = ""
    peer_addr: str = ""   # where the remote peer listens (from its hello)
    established: bool = False
    opened: float = field(default_factory=time.monotonic)
    wlock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def remote_ip(self) -> str:
        """The peer's IP (VXLAN flood target)."""
        return self.address.rpartition(":")[0]

    def send(self, doc: dict[str, Any]) -> None:
        """One message; raises OSError when the peer is gone."""
        data = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
        with self.wlock:
            self.sock.sendall(data)

    def close(self) -> None:
        """Close the socket (the reader thread then finishes)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class Target:
    """An address this peer keeps a connection to (command line, /connect, discovery)."""

    address: str
    direct: bool
    attempting: bool = False
    last_error: str = ""
    try_after: float = 0.0
    backoff: float = RETRY_MIN_S
    gave_up: bool = False


def _local_ip(conn: Conn) -> str:
    try:
        return str(conn.sock.getsockname()[0])
    except OSError:
        return ""


class Mesh:
    """Connections, targets and the gossiped peer table of one weaver."""

    def __init__(self, name: str, nickname: str, port: int, conn_limit: int, discovery: bool,
                 log: Log, host: str = "") -> None:
        self.name, self.nickname, self.port, self.host = name, nickname, port, host
        self.uid = str(int.from_bytes(secrets.token_bytes(8), "big"))
        self.conn_limit = conn_limit
        self.discovery = discovery
        self.log = log
        self.lock = threading.RLock()
        self.conns: list[Conn] = []
        self.targets: dict[str, Target] = {}
        self.peers: dict[str, dict[str, Any]] = {}  # name -> gossiped entry
        self.seen: dict[str, float] = {}            # name -> when its version last grew
        self.version = 0
        self.stopping = threading.Event()
        self.listener: socket.socket | None = None
        # Hooks weaver wires to the datapath and IPAM.
        self.on_established: Callable[[Conn], None] = lambda c: None
        self.on_lost: Callable[[Conn], None] = lambda c: None
        self.on_peers: Callable[[dict[str, str], set[str]], None] = lambda k, r: None
        self.ring: Callable[[], Any] = lambda: None
        self.on_ring: Callable[[Any], None] = lambda r: None
        self.conn_attrs: Callable[[], dict[str, Any]] = lambda: {}

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, peers: list[str]) -> None:
        """Listen on the control port, dial the initial peers, start the heartbeat."""
        self.listener = socket.create_server((self.host, self.port), reuse_port=False)
        self.listener.settimeout(1.0)
        self.connect(peers)
        for fn in (self._accept_loop, self._connect_loop, self._heartbeat_loop):
            threading.Thread(target=fn, daemon=True, name=fn.__name__).start()

    def stop(self) -> None:
        """Close everything."""
        self.stopping.set()
        if self.listener is not None:
            self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()

    def connect(self, peers: list[str], replace: bool = False) -> None:
        """Add direct peers (POST /connect); `replace` drops the previous direct ones."""
        with self.lock:
            if replace:
                for addr in [a for a, t in self.targets.items() if t.direct]:
                    del self.targets[addr]
            for p in peers:
                host, port = split_address(p, self.port)
                addr = f"{host}:{port}"
                if addr not in self.targets:
                    self.targets[addr] = Target(addr, direct=True)
                else:
                    self.targets[addr].direct = True

    def forget(self, peers: list[str]) -> None:
        """Stop dialling these peers (POST /forget); existing connections stay."""
        with self.lock:
            for p in peers:
                host, port = split_address(p, self.port)
                self.targets.pop(f"{host}:{port}", None)

    # -- connections --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self.listener is not None
        while not self.stopping.is_set():
            try:
                sock, (ip, port) = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                full = self.conn_limit > 0 and len(self.conns) >= self.conn_limit
            if full:
                self.log(f"->[{ip}:{port}] connection refused: connection limit reached "
                         f"({self.conn_limit})")
                sock.close()
                continue
            self._run(Conn(sock=sock, address=f"{ip}:{port}", outbound=False))

    def _connect_loop(self) -> None:
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            with self.lock:
                linked = {c.peer_addr for c in self.conns if c.established} | \
                         {c.address for c in self.conns if c.outbound}
                due = [t for t in self.targets.values()
                       if t.address not in linked and not t.attempting and not t.gave_up
                       and now >= t.try_after]
                for t in due:
                    t.attempting = True
            for t in due:
                threading.Thread(target=self._dial, args=(t,), daemon=True).start()

    def _dial(self, target: Target) -> None:
        host, port = split_address(target.address, self.port)
        self.log(f"->[{target.address}] attempting connection")
        try:
            sock = socket.create_connection((host, port), timeout=5)
        except OSError as e:
            with self.lock:
                target.attempting = False
                target.last_error = f"dial tcp {target.address}: {e.strerror or e}"
                target.try_after = time.monotonic() + target.backoff
                target.backoff = min(target.backoff * 2, RETRY_MAX_S)
            self.log(f"->[{target.address}] error during connection attempt: "
                     f"{target.last_error}")
            return
        self._run(Conn(sock=sock, address=target.address, outbound=True))

    def _run(self, conn: Conn) -> None:
        conn.sock.settimeout(IDLE_TIMEOUT_S)
        with self.lock:
            self.conns.append(conn)
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _hello(self, conn: Conn) -> dict[str, Any]:
        local_ip = conn.sock.getsockname()[0]
        return {"type": "hello", "proto": PROTOCOL, "version": PROTOCOL_VERSION,
                "name": self.name, "nickname": self.nickname, "uid": self.uid,
                "listen": f"{local_ip}:{self.port}"}

    def _serve(self, conn: Conn) -> None:
        reason = "connection closed"
        try:
            conn.send(self._hello(conn))
            reader = conn.sock.makefile("rb")
            while not self.stopping.is_set():
                line = reader.readline(MAX_LINE)
                if not line:
                    break
                msg = json.loads(line)
                if msg.get("type") == "hello":
                    err = self._on_hello(conn, msg)
                    if err:
                        reason = err
                        break
                elif msg.get("type") == "gossip" and conn.established:
                    self._on_gossip(msg)
        except (OSError, ValueError) as e:
            reason = str(e) or e.__class__.__name__
        finally:
            self._closed(conn, reason)

    def _on_hello(self, conn: Conn, msg: dict[str, Any]) -> str:
        if msg.get("proto") != PROTOCOL:
            return f"unknown protocol {msg.get('proto')!r}"
        name, nick = str(msg.get("name", "")), str(msg.get("nickname", ""))
        if name == self.name:
            with self.lock:
                target = self.targets.get(conn.address) if conn.outbound else None
                if target is not None:
                    target.gave_up, target.last_error = True, "cannot connect to ourself"
            return "cannot connect to ourself"
        conn.name, conn.nickname, conn.uid = name, nick, str(msg.get("uid", ""))
        conn.peer_addr = str(msg.get("listen") or conn.address)
        loser: Conn | None = None
        with self.lock:
            other = next((c for c in self.conns
                          if c is not conn and c.established and c.name == name), None)
            if other is not None:
                # Keep the connection dialled by the smaller name; both ends agree.
                keep_outbound = self.name < name
                if conn.outbound == keep_outbound:
                    loser = other
                else:
                    return "duplicate connection"
            conn.established = True
            for t in self.targets.values():
                if t.address in (conn.peer_addr, conn.address):
                    t.attempting, t.last_error, t.backoff = False, "", RETRY_MIN_S
        if loser is not None:
            loser.close()
        arrow = "->" if conn.outbound else "<-"
        self.log(f"{arrow}[{conn.address}|{name}({nick})]: connection fully established")
        self.on_established(conn)
        self._send_gossip(conn)
        return ""

    def _closed(self, conn: Conn, reason: str) -> None:
        conn.close()
        with self.lock:
            if conn in self.conns:
                self.conns.remove(conn)
            still = any(c.established and c.remote_ip == conn.remote_ip for c in self.conns)
            for t in self.targets.values():
                if conn.outbound and t.address == conn.address:
                    t.attempting = False
                    t.last_error = t.last_error or reason
                    t.try_after = time.monotonic() + t.backoff
                    t.backoff = min(t.backoff * 2, RETRY_MAX_S)
        arrow = "->" if conn.outbound else "<-"
        who = f"|{conn.name}({conn.nickname})" if conn.name else ""
        if conn.established or reason not in ("connection closed", "duplicate connection"):
            self.log(f"{arrow}[{conn.address}{who}]: connection shutting down due to error: "
                     f"{reason}")
        if conn.established and not still and not self.stopping.is_set():
            self.on_lost(conn)

    # -- gossip -------------------------------------------------------------------------

    def own_entry(self) -> dict[str, Any]:
        """This peer as it gossips itself."""
        with self.lock:
            conns = [{"Name": c.name, "NickName": c.nickname, "Address": c.address,
                      "Outbound": c.outbound, "Established": c.established}
                     for c in self.conns if c.name]
            addrs = sorted({a for c in self.conns if c.established and (a := _local_ip(c))})
        return {"Name": self.name, "NickName": self.nickname, "UID": self.uid,
                "Version": self.version, "Connections": conns,
                "Addrs": [f"{a}:{self.port}" for a in addrs]}

    def _gossip_doc(self) -> dict[str, Any]:
        with self.lock:
            entries = [self.own_entry(), *self.peers.values()]
        return {"type": "gossip", "peers": entries, "ring": self.ring()}

    def _send_gossip(self, conn: Conn) -> None:
        with contextlib.suppress(OSError):
            conn.send(self._gossip_doc())

    def _on_gossip(self, msg: dict[str, Any]) -> None:
        now = time.monotonic()
        new_addrs: list[str] = []
        with self.lock:
            for entry in msg.get("peers") or []:
                name = entry.get("Name")
                if not isinstance(name, str) or name == self.name:
                    continue
                old = self.peers.get(name)
                if old is None or int(entry.get("Version", 0)) > int(old.get("Version", 0)):
                    self.peers[name] = entry
                    self.seen[name] = now
                if self.discovery and not any(c.name == name and c.established
                                              for c in self.conns):
                    new_addrs += [a for a in entry.get("Addrs") or []
                                  if a not in self.targets]
            for addr in new_addrs:
                self.targets[addr] = Target(addr, direct=False)
        if msg.get("ring"):
            self.on_ring(msg["ring"])
        self._peers_changed()

    def _peers_changed(self) -> None:
        with self.lock:
            known = {n: str(e.get("NickName", "")) for n, e in self.peers.items()}
            direct = {c.name for c in self.conns if c.established}
        known[self.name] = self.nickname
        self.on_peers(known, set(known) | direct)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_S):
            now = time.monotonic()
            with self.lock:
                self.version += 1
                for name in [n for n, t in self.seen.items() if now - t > PEER_GC_S]:
                    if not any(c.name == name and c.established for c in self.conns):
                        self.peers.pop(name, None)
                        self.seen.pop(name, None)
                        self.log(f"Removed unreachable peer {name}")
                stale = [c for c in self.conns
                         if not c.established and now - c.opened > HELLO_TIMEOUT_S]
                live = [c for c in self.conns if c.established]
            for c in stale:
                c.close()
            doc = self._gossip_doc()
            for c in live:
                try:
                    c.send(doc)
                except OSError:
                    c.close()
            self._peers_changed()

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Upstream mesh.Status shape: Peers, Connections, Targets (plus weave's extras)."""
        attrs = self.conn_attrs()
        overlay = str(attrs.get("name", ""))
        with self.lock:
            linked = {c.peer_addr for c in self.conns if c.established} | \
                     {c.address for c in self.conns}
            conns: list[dict[str, Any]] = [
                {"Address": c.address, "Outbound": c.outbound,
                 "State": "established" if c.established else "pending",
                 "Info": f"{overlay:<6} {c.name}({c.nickname})" if c.name else "",
                 "Attrs": attrs if c.established else None}
                for c in self.conns]
            for t in self.targets.values():
                if t.address in linked:
                    continue
                if t.gave_up:
                    state, info = "failed", t.last_error
                elif t.attempting:
                    state, info = ("retrying", t.last_error) if t.last_error else \
                                  ("connecting", "")
                elif t.last_error:
                    wait = max(0.0, t.try_after - time.monotonic())
                    state, info = "failed", f"{t.last_error}, retry: {wait:.1f}s"
                else:
                    state, info = "connecting", ""
                conns.append({"Address": t.address, "Outbound": True, "State": state,
                              "Info": info, "Attrs": None})
            peers = [self.own_entry(), *sorted(self.peers.values(), key=lambda e: e["Name"])]
            targets = sorted(a for a, t in self.targets.items() if t.direct)
        return {"Protocol": PROTOCOL, "ProtocolMinVersion": PROTOCOL_VERSION,
                "ProtocolMaxVersion": PROTOCOL_VERSION, "Encryption": False,
                "PeerDiscovery": self.discovery, "Name": self.name, "NickName": self.nickname,
                "Port": self.port, "Peers": peers, "Connections": conns, "Targets": targets,
                "TrustedSubnets": [], "UnicastRoutes": None, "BroadcastRoutes": None}
