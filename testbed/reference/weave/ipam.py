"""Cluster-wide IPAM over --ipalloc-range: a ring split by consensus, allocations persisted.

Consensus, as this reference build does it: once a peer knows N peer names (N from
`--ipalloc-init consensus=N`, itself included), it splits the range into N equal contiguous
pieces in the order of the sorted peer names, each peer owning one piece. Every peer computes the
same split from the same names, and the first ring a peer decides or hears is gossiped, so a
peer that learns fewer names adopts the ring of one that knew them all. Upstream runs Paxos
among a quorum (N/2+1) and then splits the range evenly among the agreed peers
(ring.ClaimForPeers); waiting for all N keeps this build deterministic without Paxos. A peer
outside the ring owns nothing and cannot allocate (upstream would ask others for space).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.reference.weave import EXPOSE_ID


class IpamError(Exception):
    """An allocation request that cannot be satisfied; `status` is the HTTP status to answer."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True)
class Entry:
    """One piece of the ring: addresses [start, end) owned by a peer."""

    start: int
    end: int
    peer: str
    nickname: str

    def contains(self, addr: int) -> bool:
        """Whether an address (as an int) lies in this piece."""
        return self.start <= addr < self.end


def split(universe: ipaddress.IPv4Network, peers: dict[str, str]) -> list[Entry]:
    """The whole range cut into len(peers) contiguous pieces, in sorted peer-name order."""
    names = sorted(peers)
    if not names:
        raise ValueError("cannot split a range among no peers")
    base, size = int(universe.network_address), universe.num_addresses
    return [Entry(base + size * i // len(names), base + size * (i + 1) // len(names), name,
                  peers[name]) for i, name in enumerate(names)]


def ring_to_doc(ring: list[Entry]) -> list[dict[str, Any]]:
    """A ring as JSON (for gossip and the database)."""
    return [asdict(e) for e in ring]


def ring_from_doc(doc: Any) -> list[Entry]:
    """A ring from JSON, or ValueError when it is malformed."""
    if not isinstance(doc, list) or not doc:
        raise ValueError("ring must be a non-empty list")
    ring = [Entry(int(e["start"]), int(e["end"]), str(e["peer"]), str(e.get("nickname", "")))
            for e in doc]
    for a, b in itertools.pairwise(ring):
        if a.end != b.start:
            raise ValueError("ring pieces must be contiguous")
    return ring


@dataclass
class State:
    """What the allocator persists under --db-prefix."""

    universe: str
    peer_name: str
    ring: list[Entry] | None = None
    owned: dict[str, list[str]] = field(default_factory=dict)


class Allocator:
    """Allocations for one peer: its own ring pieces, addresses per container id."""

    def __init__(self, universe: str, our_name: str, our_nickname: str, quorum: int,
                 db_path: str | None = None, default_subnet: str | None = None) -> None:
        self.universe = ipaddress.IPv4Network(universe, strict=False)
        self.default_subnet = (ipaddress.IPv4Network(default_subnet, strict=False)
                               if default_subnet else self.universe)
        if not self.default_subnet.overlaps(self.universe):
            raise IpamError(f"IP address allocation default subnet {self.default_subnet} does "
                            f"not overlap with allocation range {self.universe}")
        self.name = our_name
        self.nickname = our_nickname
        self.quorum = max(1, quorum)
        self.db_path = Path(db_path) if db_path else None
        self.known: dict[str, str] = {our_name: our_nickname}
        self.reachable: set[str] = {our_name}
        self.cond = threading.Condition()
        self.state = self._load()

    # -- persistence --------------------------------------------------------------------

    def _load(self) -> State:
        fresh = State(universe=str(self.universe), peer_name=self.name)
        if self.db_path is None or not self.db_path.exists():
            return fresh
        doc = json.loads(self.db_path.read_text())
        if doc.get("universe") != str(self.universe):
            raise IpamError(f"persisted range {doc.get('universe')} differs from "
                            f"--ipalloc-range {self.universe}: remove {self.db_path} to reset")
        if doc.get("peer_name") != self.name:
            return fresh  # another peer's data (name changed): start over like a new peer
        ring = ring_from_doc(doc["ring"]) if doc.get("ring") else None
        owned = {str(k): [str(a) for a in v] for k, v in (doc.get("owned") or {}).items()}
        return State(universe=str(self.universe), peer_name=self.name, ring=ring, owned=owned)

    def _save(self) -> None:
        if self.db_path is None:
            return
        doc = {"universe": self.state.universe, "peer_name": self.state.peer_name,
               "ring": ring_to_doc(self.state.ring) if self.state.ring else None,
               "owned": self.state.owned}
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.db_path.with_name(self.db_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, self.db_path)

    # -- consensus ----------------------------------------------------------------------

    def peers_known(self, peers: dict[str, str], reachable: set[str] | None = None) -> bool:
        """Learn peer names (name -> nickname); decide the ring once N are known.

        Returns True when this call decided the ring.
        """
        with self.cond:
            self.known.update(peers)
            if reachable is not None:
                self.reachable = {self.name, *reachable}
            if self.state.ring is not None or len(self.known) < self.quorum:
                return False
            self.state.ring = split(self.universe, self.known)
            self._save()
            self.cond.notify_all()
            return True

    def adopt(self, doc: Any) -> bool:
        """Take a ring another peer decided, if we have none yet; True when adopted."""
        ring = ring_from_doc(doc)
        if (ring[0].start, ring[-1].end) != (int(self.universe.network_address),
                                             int(self.universe.broadcast_address) + 1):
            raise ValueError("ring does not cover our --ipalloc-range")
        with self.cond:
            if self.state.ring is not None:
                return False
            self.state.ring = ring
            for e in ring:
                self.known.setdefault(e.peer, e.nickname)
            self._save()
            self.cond.notify_all()
            return True

    def ring_doc(self) -> list[dict[str, Any]] | None:
        """The decided ring as JSON, or None before consensus."""
        with self.cond:
            return ring_to_doc(self.state.ring) if self.state.ring else None

    def ready(self) -> bool:
        """Whether the ring is decided."""
        with self.cond:
            return self.state.ring is not None

    # -- allocation ---------------------------------------------------------------------

    def _subnet(self, cidr: str | None) -> ipaddress.IPv4Network:
        if not cidr:
            return self.default_subnet
        try:
            net = ipaddress.IPv4Network(cidr, strict=False)
        except ValueError as e:
            raise IpamError(f"invalid CIDR: {cidr}") from e
        if not net.overlaps(self.universe):
            raise IpamError(f"{net} is not inside the allocation range {self.universe}")
        return net

    def _used(self) -> set[int]:
        return {int(ipaddress.IPv4Interface(a).ip) for v in self.state.owned.values() for a in v}

    def _wait_ring(self, timeout: float) -> list[Entry]:
        deadline = time.monotonic() + timeout
        while self.state.ring is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise IpamError(f"awaiting consensus (quorum: {self.quorum}, known: "
                                f"{len(self.known)}): no IP range is owned yet", status=503)
            self.cond.wait(left)
        return self.state.ring

    def allocate(self, ident: str, subnet: str | None = None, timeout: float = 90.0) -> str:
        """An address for `ident` in `subnet` (default subnet if None): `10.32.0.5/12`."""
        net = self._subnet(subnet)
        with self.cond:
            for cidr in self.state.owned.get(ident, []):
                iface = ipaddress.IPv4Interface(cidr)
                if iface.ip in net:
                    return f"{iface.ip}/{net.prefixlen}"
            ring = self._wait_ring(timeout)
            used = self._used()
            lo = max(int(net.network_address) + 1, int(self.universe.network_address) + 1)
            hi = min(int(net.broadcast_address), int(self.universe.broadcast_address))
            for e in (e for e in ring if e.peer == self.name):
                for addr in range(max(e.start, lo), min(e.end, hi)):
                    if addr not in used:
                        cidr = f"{ipaddress.IPv4Address(addr)}/{net.prefixlen}"
                        self.state.owned.setdefault(ident, []).append(cidr)
                        self._save()
                        return cidr
            if not any(e.peer == self.name for e in ring):
                raise IpamError(f"peer {self.name} owns no part of {self.universe} (it was not "
                                "among the initial consensus peers)", status=503)
            raise IpamError(f"no free address in {net} owned by this peer", status=503)

    def claim(self, ident: str, cidr: str) -> None:
        """Record a specific address for `ident` (PUT /ip/<id>/<ip>/<prefixlen>)."""
        try:
            iface = ipaddress.IPv4Interface(cidr)
        except ValueError as e:
            raise IpamError(f"invalid CIDR: {cidr}") from e
        addr = int(iface.ip)
        with self.cond:
            ring = self._wait_ring(30.0)
            owner = next((e for e in ring if e.contains(addr)), None)
            if owner is None:
                raise IpamError(f"address {iface.ip} is outside {self.universe}")
            if owner.peer != self.name:
                raise IpamError(f"address {iface.ip} is owned by peer {owner.nickname}")
            for other, addrs in self.state.owned.items():
                if other != ident and any(ipaddress.IPv4Interface(a).ip == iface.ip
                                          for a in addrs):
                    raise IpamError(f"address {iface.ip} is already owned by {other}")
            current = self.state.owned.setdefault(ident, [])
            if not any(ipaddress.IPv4Interface(a).ip == iface.ip for a in current):
                current.append(str(iface))
                self._save()

    def lookup(self, ident: str, subnet: str | None = None) -> list[str]:
        """The addresses `ident` holds (in `subnet` when given)."""
        net = self._subnet(subnet) if subnet else None
        with self.cond:
            addrs = list(self.state.owned.get(ident, []))
        return [a for a in addrs if net is None or ipaddress.IPv4Interface(a).ip in net]

    def delete(self, ident: str) -> None:
        """Release every address of `ident`; an error when it holds none (as upstream)."""
        with self.cond:
            if not self.state.owned.pop(ident, None):
                raise IpamError(f"Delete: no addresses for {ident}")
            self._save()

    def free(self, ident: str, ip: str) -> None:
        """Release one address of `ident`."""
        with self.cond:
            addrs = self.state.owned.get(ident, [])
            keep = [a for a in addrs if str(ipaddress.IPv4Interface(a).ip) != ip]
            if len(keep) == len(addrs):
                raise IpamError(f"Free: address {ip} not owned by {ident}")
            if keep:
                self.state.owned[ident] = keep
            else:
                del self.state.owned[ident]
            self._save()

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Upstream's ipam.Status shape (Range, Entries, Paxos, ActiveIPs, ...)."""
        with self.cond:
            ring = self.state.ring
            active = sum(len(v) for k, v in self.state.owned.items() if k != EXPOSE_ID)
            paxos = None if ring else {"Elector": True, "Quorum": self.quorum,
                                       "KnownNodes": len(self.known)}
            entries = [{"Token": str(ipaddress.IPv4Address(e.start)), "Size": e.end - e.start,
                        "Peer": e.peer, "Nickname": e.nickname,
                        "IsKnownPeer": e.peer in self.reachable, "Version": 0}
                       for e in ring or []]
            return {"Paxos": paxos, "Range": str(self.universe),
                    "RangeNumIPs": self.universe.num_addresses, "ActiveIPs": active,
                    "DefaultSubnet": str(self.default_subnet), "Entries": entries,
                    "PendingClaims": [], "PendingAllocates": [],
                    "Owned": {k: list(v) for k, v in sorted(self.state.owned.items())}}
