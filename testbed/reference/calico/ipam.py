"""Calico IPAM over etcd v3: /26 blocks affine to a host, handles, compare-and-swap updates.

Follows libcalico-go's ipam.go: a host allocates from its affine blocks first and claims a
new block (pending affinity -> block -> confirmed affinity) only when they are full; every
write is a compare-and-swap on the key's mod_revision, retried on conflict; an allocation is
recorded in the block (allocations / unallocated / attributes / sequence numbers) and in the
handle `<network>.<container id>` so a release by handle frees exactly what was assigned.
Standard library only (bundled into the CNI plugins).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from testbed.reference.calico import model
from testbed.reference.etcdv3 import Etcd, KeyValue, b64

CAS_RETRIES = 10


class IpamError(Exception):
    """IPAM could not satisfy a request (no pool, no free block, datastore conflict)."""


class NotFound(IpamError):
    """The handle or resource does not exist (callers usually ignore this on release)."""


# --- pure block math --------------------------------------------------------------------------

def fnv32(data: bytes) -> int:
    """FNV-1 32-bit, the hash Go's hash/fnv.New32 computes (used to seed a host's start block)."""
    h = 0x811C9DC5
    for byte in data:
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= byte
    return h


def block_count(pool: str, block_size: int) -> int:
    """How many blocks of /block_size a pool holds."""
    net = ipaddress.ip_network(pool)
    if block_size < net.prefixlen:
        raise IpamError(f"block size /{block_size} is larger than pool {pool}")
    return 1 << (block_size - net.prefixlen)


def block_at(pool: str, block_size: int, index: int) -> str:
    """The index-th block of a pool."""
    net = ipaddress.ip_network(pool)
    base = int(net.network_address) + index * (1 << (net.max_prefixlen - block_size))
    return f"{ipaddress.ip_address(base)}/{block_size}"


def candidate_blocks(pool: str, block_size: int, host: str) -> Iterator[str]:
    """Every block of the pool, starting at a host-dependent index and wrapping around.

    libcalico-go seeds math/rand with FNV-32(hostname) to pick the start; this walks from
    FNV-32(hostname) mod N instead (same intent: hosts start in different places).
    """
    n = block_count(pool, block_size)
    start = fnv32(host.encode()) % n
    for i in range(n):
        yield block_at(pool, block_size, (start + i) % n)


def block_for(ip: str, block_size: int) -> str:
    """The block CIDR an address belongs to."""
    return str(ipaddress.ip_network(f"{ip}/{block_size}", strict=False))


def new_block(cidr: str, host: str) -> dict[str, Any]:
    """An empty AllocationBlock affine to host (every ordinal free, in order)."""
    size = ipaddress.ip_network(cidr).num_addresses
    return {
        "cidr": str(ipaddress.ip_network(cidr)),
        "affinity": f"host:{host}",
        "allocations": [None] * size,
        "unallocated": list(range(size)),
        "attributes": [],
        "sequenceNumber": 0,
        "sequenceNumberForAllocation": {},
        "deleted": False,
    }


def ordinal_ip(block: dict[str, Any], ordinal: int) -> str:
    """The address at an ordinal of a block."""
    net = ipaddress.ip_network(block["cidr"])
    return str(net.network_address + ordinal)


def ip_ordinal(block: dict[str, Any], ip: str) -> int:
    """The ordinal of an address inside a block."""
    net = ipaddress.ip_network(block["cidr"])
    addr = ipaddress.ip_address(ip)
    if addr not in net:
        raise IpamError(f"{ip} is not in block {block['cidr']}")
    return int(addr) - int(net.network_address)


def assign_in_block(block: dict[str, Any], handle: str, attrs: dict[str, str]) -> int | None:
    """Take the head of the free queue for handle; None when the block is full."""
    if not block["unallocated"]:
        return None
    ordinal = block["unallocated"].pop(0)
    attr = {"handle_id": handle, "secondary": dict(attrs)}
    try:
        index = block["attributes"].index(attr)
    except ValueError:
        block["attributes"].append(attr)
        index = len(block["attributes"]) - 1
    block["allocations"][ordinal] = index
    block["sequenceNumber"] = int(block.get("sequenceNumber", 0)) + 1
    block.setdefault("sequenceNumberForAllocation", {})[str(ordinal)] = block["sequenceNumber"]
    return int(ordinal)


def release_in_block(block: dict[str, Any], handle: str) -> list[int]:
    """Free every ordinal held by handle (to the tail of the queue); returns them."""
    attrs = block["attributes"]
    freed = [o for o, a in enumerate(block["allocations"])
             if a is not None and a < len(attrs) and attrs[a].get("handle_id") == handle]
    for o in freed:
        block["allocations"][o] = None
        block["unallocated"].append(o)
        block.get("sequenceNumberForAllocation", {}).pop(str(o), None)
    if freed:
        _compact_attributes(block)
        block["sequenceNumber"] = int(block.get("sequenceNumber", 0)) + 1
    return freed


def _compact_attributes(block: dict[str, Any]) -> None:
    """Drop attributes no allocation refers to and renumber the rest (as upstream does)."""
    used = sorted({a for a in block["allocations"] if a is not None})
    remap = {old: new for new, old in enumerate(used)}
    block["attributes"] = [block["attributes"][old] for old in used]
    block["allocations"] = [None if a is None else remap[a] for a in block["allocations"]]


def in_use(block: dict[str, Any]) -> int:
    """How many addresses of a block are allocated."""
    return sum(1 for a in block["allocations"] if a is not None)


# --- etcd compare-and-swap --------------------------------------------------------------------

def put_if(etcd: Etcd, key: str, value: str, mod_revision: int) -> bool:
    """Write key only if its mod_revision is unchanged (0: only if it does not exist)."""
    target = "MOD" if mod_revision else "CREATE"
    field = "mod_revision" if mod_revision else "create_revision"
    body = etcd.call("/v3/kv/txn", {
        "compare": [{"key": b64(key), "result": "EQUAL", "target": target,
                     field: str(mod_revision)}],
        "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
    })
    return bool(body.get("succeeded", False))


def delete_if(etcd: Etcd, key: str, mod_revision: int) -> bool:
    """Delete key only if its mod_revision is unchanged."""
    body = etcd.call("/v3/kv/txn", {
        "compare": [{"key": b64(key), "result": "EQUAL", "target": "MOD",
                     "mod_revision": str(mod_revision)}],
        "success": [{"request_delete_range": {"key": b64(key)}}],
    })
    return bool(body.get("succeeded", False))


def _load(kv: KeyValue | None) -> dict[str, Any] | None:
    return json.loads(kv.value) if kv is not None else None


@dataclass(frozen=True)
class Pool:
    """The parts of an IPPool that IPAM needs."""

    name: str
    cidr: str
    block_size: int
    allowed_uses: tuple[str, ...]
    disabled: bool
    vxlan_mode: str
    ipip_mode: str
    nat_outgoing: bool

    @classmethod
    def from_resource(cls, res: dict[str, Any]) -> Pool:
        """Read a stored IPPool, applying clientv3's read-time defaults."""
        spec = res.get("spec", {})
        return cls(
            name=res.get("metadata", {}).get("name", ""),
            cidr=str(ipaddress.ip_network(spec["cidr"])),
            block_size=int(spec.get("blockSize") or model.DEFAULT_BLOCK_SIZE),
            allowed_uses=tuple(spec.get("allowedUses") or ("Workload", "Tunnel")),
            disabled=bool(spec.get("disabled", False)),
            vxlan_mode=spec.get("vxlanMode") or "Never",
            ipip_mode=spec.get("ipipMode") or "Never",
            nat_outgoing=bool(spec.get("natOutgoing", False)),
        )

    def contains(self, cidr_or_ip: str) -> bool:
        """Whether an address or block lies inside the pool."""
        net = ipaddress.ip_network(cidr_or_ip, strict=False)
        return net.subnet_of(ipaddress.ip_network(self.cidr))  # type: ignore[arg-type]


def list_pools(etcd: Etcd) -> list[Pool]:
    """Every IPv4 IPPool in the datastore."""
    kvs, _ = etcd.get_prefix(model.resource_prefix("IPPool"))
    pools = [Pool.from_resource(json.loads(kv.value)) for kv in kvs]
    return [p for p in pools if ipaddress.ip_network(p.cidr).version == 4]


class Ipam:
    """AutoAssign / ReleaseByHandle for one host against one etcd."""

    def __init__(self, etcd: Etcd, host: str) -> None:
        self.etcd = etcd
        self.host = host

    def affine_blocks(self) -> list[tuple[str, str]]:
        """(cidr, state) of every block affine to this host."""
        kvs, _ = self.etcd.get_prefix(model.affinity_prefix(self.host))
        out = []
        for kv in kvs:
            state = (json.loads(kv.value or b"{}") or {}).get("state", "confirmed")
            out.append((model.cidr_from_part(kv.key.rsplit("/", 1)[1]), state))
        return out

    def auto_assign(self, handle: str, attrs: dict[str, str], use: str = "Workload",
                    pools: list[Pool] | None = None) -> str:
        """One IPv4 address for handle, as `<ip>/<block prefix>`."""
        usable = [p for p in (pools if pools is not None else list_pools(self.etcd))
                  if not p.disabled and use in p.allowed_uses]
        if not usable:
            raise IpamError(f"no enabled IPv4 pool allows {use} addresses")
        for cidr, state in self.affine_blocks():
            pool = next((p for p in usable if p.contains(cidr)), None)
            if state != "confirmed" or pool is None:
                continue
            ip = self._assign_from(cidr, handle, attrs)
            if ip:
                return f"{ip}/{pool.block_size}"
        for pool in usable:
            for cidr in candidate_blocks(pool.cidr, pool.block_size, self.host):
                if not self._claim(cidr):
                    continue
                ip = self._assign_from(cidr, handle, attrs)
                if ip:
                    return f"{ip}/{pool.block_size}"
        raise IpamError("no free block left in any IP pool")

    def _claim(self, cidr: str) -> bool:
        """Claim an unclaimed block: pending affinity, create the block, confirm the affinity."""
        if self.etcd.get(model.block_key(cidr)) is not None:
            return False
        aff_key = model.affinity_key(self.host, cidr)
        pending = model.dumps({"state": "pending", "deleted": False})
        put_if(self.etcd, aff_key, pending, 0)
        if not put_if(self.etcd, model.block_key(cidr),
                      model.dumps(new_block(cidr, self.host)), 0):
            kv = self.etcd.get(aff_key)  # another host won the race: drop our pending claim
            if kv is not None:
                delete_if(self.etcd, aff_key, kv.mod_revision)
            return False
        self.etcd.put(aff_key, model.dumps({"state": "confirmed", "deleted": False}))
        return True

    def _assign_from(self, cidr: str, handle: str, attrs: dict[str, str]) -> str | None:
        for _ in range(CAS_RETRIES):
            kv = self.etcd.get(model.block_key(cidr))
            block = _load(kv)
            if kv is None or block is None or block.get("deleted"):
                return None
            ordinal = assign_in_block(block, handle, attrs)
            if ordinal is None:
                return None
            # Handle first, then the block (libcalico-go's order); undo the handle on conflict.
            self._change_handle(handle, cidr, +1)
            if put_if(self.etcd, kv.key, model.dumps(block), kv.mod_revision):
                return ordinal_ip(block, ordinal)
            self._change_handle(handle, cidr, -1)
        raise IpamError(f"too many conflicts updating block {cidr}")

    def _change_handle(self, handle: str, cidr: str, delta: int) -> None:
        key = model.handle_key(handle)
        for _ in range(CAS_RETRIES):
            kv = self.etcd.get(key)
            doc = _load(kv) or {"block": {}, "deleted": False}
            blocks: dict[str, int] = doc.setdefault("block", {})
            blocks[cidr] = blocks.get(cidr, 0) + delta
            if blocks[cidr] <= 0:
                del blocks[cidr]
            if not blocks and kv is not None:
                if delete_if(self.etcd, key, kv.mod_revision):
                    return
                continue
            if put_if(self.etcd, key, model.dumps(doc), kv.mod_revision if kv else 0):
                return
        raise IpamError(f"too many conflicts updating handle {handle}")

    def release_by_handle(self, handle: str) -> list[str]:
        """Free every address held by handle and delete the handle; NotFound if absent."""
        kv = self.etcd.get(model.handle_key(handle))
        doc = _load(kv)
        if kv is None or doc is None:
            raise NotFound(f"handle {handle} does not exist")
        released: list[str] = []
        for cidr in doc.get("block", {}):
            for _ in range(CAS_RETRIES):
                bkv = self.etcd.get(model.block_key(cidr))
                block = _load(bkv)
                if bkv is None or block is None:
                    break
                freed = release_in_block(block, handle)
                if not freed:
                    break
                if put_if(self.etcd, bkv.key, model.dumps(block), bkv.mod_revision):
                    released += [ordinal_ip(block, o) for o in freed]
                    break
            else:
                raise IpamError(f"too many conflicts releasing from block {cidr}")
        hkv = self.etcd.get(model.handle_key(handle))
        if hkv is not None:
            delete_if(self.etcd, hkv.key, hkv.mod_revision)
        return released

    def ips_by_handle(self, handle: str) -> list[str]:
        """Addresses a handle holds (read-only)."""
        doc = _load(self.etcd.get(model.handle_key(handle)))
        if doc is None:
            return []
        out = []
        for cidr in doc.get("block", {}):
            block = _load(self.etcd.get(model.block_key(cidr)))
            if block is None:
                continue
            attrs = block["attributes"]
            out += [ordinal_ip(block, o) for o, a in enumerate(block["allocations"])
                    if a is not None and attrs[a].get("handle_id") == handle]
        return out
