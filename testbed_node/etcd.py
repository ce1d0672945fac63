"""The daemon's etcd: etcd3gw, plus the gateway calls it lacks (range revision, txn, watch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception
from etcd3gw.lease import Lease
from etcd3gw.utils import _decode, _encode, _increment_last_byte

T = TypeVar("T")


class EtcdCompacted(Exception):
    """A watch asked for a revision that etcd has already compacted away."""


class KeyValue(NamedTuple):
    """One key of a range read: name, raw value, revision of its last change."""

    key: str
    value: bytes
    mod_revision: int


def describe(e: BaseException) -> str:
    """What went wrong: etcd3gw keeps its message in detail_text, not in str()."""
    return str(getattr(e, "detail_text", None) or e)


class Etcd:
    """etcd3gw clients for a comma-separated endpoint list; the first that answers wins."""

    def __init__(self, endpoints: str, timeout: float = 5.0) -> None:
        urls = [urlsplit(e.strip()) for e in endpoints.split(",") if e.strip()]
        self.clients = [Etcd3Client(host=u.hostname or "127.0.0.1", port=u.port or 2379,
                                    protocol=u.scheme or "http", timeout=timeout,
                                    api_path="/v3/") for u in urls]

    def _each(self, call: Callable[[Etcd3Client], T]) -> T:
        """Run `call` on the first client that connects, and stick to it."""
        for i, client in enumerate(list(self.clients)):
            try:
                result = call(client)
            except (ConnectionFailedError, ConnectionTimeoutError):
                if i + 1 < len(self.clients):
                    continue
                raise
            self.clients.insert(0, self.clients.pop(i))
            return result
        raise ValueError("no etcd endpoints")

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._each(lambda c: c.post(c.get_url(path), json=body)))

    def grant(self, ttl: int) -> Lease:
        """A new lease of `ttl` seconds."""
        return self._each(lambda c: c.lease(ttl))  # type: ignore[no-any-return]

    def keepalive(self, lease: Lease) -> int:
        """Refresh a lease once; its new TTL (<= 0 when the lease is gone)."""
        return int(self._each(lambda c: Lease(lease.id, client=c).refresh()))

    def put(self, key: str, value: str, lease: Lease | None = None) -> None:
        """Write a key, on `lease` when given."""
        self._each(lambda c: c.put(key, value.encode(), lease=lease))

    def delete(self, key: str) -> None:
        """Delete one key."""
        self._each(lambda c: c.delete(key))

    def delete_if_unmodified(self, key: str, mod_revision: int, *also: str) -> bool:
        """Delete `key` (and `also`) in one txn, only if it was last changed at `mod_revision`."""
        body = self._post("/kv/txn", {
            "compare": [{"key": _encode(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": str(mod_revision)}],
            "success": [{"request_delete_range": {"key": _encode(k)}} for k in (key, *also)],
        })
        return bool(body.get("succeeded"))

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store revision the read was made at."""
        body = self._post("/kv/range", {"key": _encode(prefix),
                                        "range_end": _encode(_increment_last_byte(prefix))})
        kvs = [KeyValue(_decode(kv["key"]).decode(errors="replace"), _decode(kv.get("value", "")),
                        int(kv.get("mod_revision", 0))) for kv in body.get("kvs") or []]
        return kvs, int(body.get("header", {}).get("revision", 0))

    def wait_prefix(self, prefix: str, start_revision: int, timeout: float) -> bool:
        """Watch `prefix` from `start_revision`: True on a change, False at `timeout`."""
        client = self.clients[0]
        req = {"create_request": {"key": _encode(prefix), "start_revision": str(start_revision),
                                  "range_end": _encode(_increment_last_byte(prefix))}}
        try:
            with client.session.post(client.get_url("/watch"), json=req, stream=True,
                                     timeout=(client.timeout, timeout)) as resp:
                if resp.status_code != requests.codes.ok:
                    raise Etcd3Exception(resp.text, resp.reason)
                for line in filter(bytes.strip, resp.iter_lines()):
                    body = json.loads(line)
                    result = body.get("result") or {}
                    if "error" in body or result.get("canceled"):
                        if int(result.get("compact_revision") or 0):
                            raise EtcdCompacted(f"{start_revision} < {result['compact_revision']}")
                        raise Etcd3Exception(line.decode(), "watch canceled by etcd")
                    if result.get("events"):
                        return True
        except requests.exceptions.RequestException as e:  # a mid-stream timeout: ConnectionError
            if isinstance(e, requests.exceptions.Timeout) or \
                    (e.args and isinstance(e.args[0], urllib3.exceptions.ReadTimeoutError)):
                return False
            raise ConnectionFailedError(str(e)) from e
        raise ConnectionFailedError("watch stream closed by etcd")
