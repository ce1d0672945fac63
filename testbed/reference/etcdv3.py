"""Minimal etcd v3 client over etcd's JSON gRPC gateway (stdlib only; etcd >= 3.4)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 5.0


class EtcdError(Exception):
    """etcd answered with an error (the gateway's {"error", "code"} body)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint could be reached."""


class EtcdCompacted(EtcdError):
    """A watch asked for a revision that etcd has already compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"required revision has been compacted (now {compact_revision})")
        self.compact_revision = compact_revision


def b64(data: str | bytes) -> str:
    """Base64 of a key or value, as the gateway expects it."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(data: str) -> bytes:
    """Decode a base64 field of a gateway response."""
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: str | bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's WithPrefix)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it."""

    key: str
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8", errors="replace")

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        """Build from the gateway's JSON (int64 fields arrive as strings)."""
        return cls(
            key=unb64(kv.get("key", "")).decode("utf-8", errors="replace"),
            value=unb64(kv.get("value", "")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            version=int(kv.get("version", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by a watch: type is "PUT" or "DELETE"."""

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True)
class WatchBatch:
    """One watch response: the events and the header revision they were read at."""

    revision: int
    events: list[WatchEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Lease:
    """A granted lease: its id and the TTL etcd granted, in seconds."""

    id: int
    ttl: int


def _event(ev: dict[str, Any]) -> WatchEvent:
    prev = ev.get("prev_kv")
    return WatchEvent(
        type=str(ev.get("type", "PUT")),
        kv=KeyValue.from_json(ev.get("kv", {})),
        prev_kv=KeyValue.from_json(prev) if prev else None,
    )


def _revision(body: dict[str, Any]) -> int:
    return int(body.get("header", {}).get("revision", 0))


class Etcd:
    """A client for a list of endpoints (http://host:port); the first that answers wins."""

    def __init__(self, endpoints: list[str] | str, timeout: float = DEFAULT_TIMEOUT) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [e.strip().rstrip("/") for e in endpoints]
        self.timeout = timeout

    # -- transport -------------------------------------------------------
    def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST a JSON body to a gateway path; fail over across endpoints."""
        last: Exception | None = None
        for i, endpoint in enumerate(list(self.endpoints)):
            try:
                result = self._post(endpoint + path, body, timeout or self.timeout)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                last = e
                continue
            if i:  # stick to the endpoint that answered
                self.endpoints.insert(0, self.endpoints.pop(i))
            return result
        raise EtcdUnavailable(f"no etcd endpoint reachable ({', '.join(self.endpoints)}): {last}")

    @staticmethod
    def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        data = json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            raise _error_from(raw, e.code) from None
        parsed: dict[str, Any] = json.loads(raw or b"{}")
        if "error" in parsed and "header" not in parsed and "result" not in parsed:
            raise _error_from(raw, 0)
        return parsed

    # -- kv ---------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        """The key, or None when it does not exist."""
        body = self.call("/v3/kv/range", {"key": b64(key)})
        kvs = body.get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store revision the read was made at."""
        body = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        return [KeyValue.from_json(kv) for kv in body.get("kvs") or []], _revision(body)

    def revision(self) -> int:
        """The current store revision."""
        return _revision(self.call("/v3/kv/range", {"key": b64("\0"), "count_only": True}))

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        """Write a key (attached to `lease` when non-zero); returns the new revision."""
        req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            req["lease"] = str(lease)
        return _revision(self.call("/v3/kv/put", req))

    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        """Write the key only if it does not exist (txn on create_revision == 0)."""
        put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            put["lease"] = str(lease)
        body = self.call("/v3/kv/txn", {
            "compare": [{"key": b64(key), "result": "EQUAL", "target": "CREATE",
                         "create_revision": "0"}],
            "success": [{"request_put": put}],
        })
        return bool(body.get("succeeded", False))

    def delete(self, key: str) -> int:
        """Delete one key; returns how many keys were deleted (0 or 1)."""
        return int(self.call("/v3/kv/deleterange", {"key": b64(key)}).get("deleted", 0))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many were deleted."""
        body = self.call("/v3/kv/deleterange",
                         {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        return int(body.get("deleted", 0))

    # -- leases -----------------------------------------------------------
    def lease_grant(self, ttl: int) -> Lease:
        """Grant a lease of `ttl` seconds."""
        body = self.call("/v3/lease/grant", {"TTL": str(ttl), "ID": "0"})
        if body.get("error"):
            raise EtcdError(str(body["error"]))
        return Lease(id=int(body["ID"]), ttl=int(body.get("TTL", ttl)))

    def lease_keepalive(self, lease_id: int) -> int:
        """Refresh a lease once; returns its new TTL (0 when the lease is gone)."""
        body = self.call("/v3/lease/keepalive", {"ID": str(lease_id)})
        return int(body.get("result", body).get("TTL", 0))

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease (its keys are deleted); a lease already gone is not an error."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as e:
            if "lease not found" not in str(e):
                raise

    def lease_ttl(self, lease_id: int) -> int:
        """Remaining TTL of a lease in seconds (-1 when it does not exist)."""
        return int(self.call("/v3/lease/timetolive", {"ID": str(lease_id)}).get("TTL", -1))

    # -- watch ------------------------------------------------------------
    def watch_prefix(self, prefix: str, start_revision: int = 0,
                     timeout: float | None = None) -> Watch:
        """A streaming watch of every key under `prefix` from `start_revision` (0 = now)."""
        return Watch(self, prefix, start_revision, timeout)

    def wait_prefix(self, prefix: str, start_revision: int, timeout: float) -> WatchBatch | None:
        """Block until a change under `prefix` at or after `start_revision`, or `timeout`.

        Returns the first batch of events, or None on timeout. Raises EtcdCompacted
        when `start_revision` is older than etcd's history (re-list, then retry).
        """
        watch = self.watch_prefix(prefix, start_revision, timeout)
        try:
            return next(iter(watch), None)
        except TimeoutError:
            return None
        finally:
            watch.cancel()


class Watch:
    """A server-streaming watch; iterate for batches, cancel() from anywhere to stop."""

    def __init__(self, client: Etcd, prefix: str, start_revision: int,
                 timeout: float | None) -> None:
        self.client = client
        self.request: dict[str, Any] = {"create_request": {
            "key": b64(prefix), "range_end": b64(prefix_end(prefix)),
        }}
        if start_revision:
            self.request["create_request"]["start_revision"] = str(start_revision)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._cancelled = False

    def __iter__(self) -> Iterator[WatchBatch]:
        resp = self._open()
        try:
            while not self._cancelled:
                line = self._readline(resp)
                if not line:
                    if self._cancelled:
                        return
                    raise EtcdUnavailable("watch stream closed by etcd")
                batch = self._parse(line)
                if batch is not None:
                    yield batch
        finally:
            self._close()

    def _readline(self, resp: http.client.HTTPResponse) -> bytes:
        try:
            return resp.readline()
        except TimeoutError as e:
            raise TimeoutError("watch timed out") from e
        except Exception:
            if self._cancelled:  # the socket was shut down under the reader
                return b""
            raise

    def cancel(self) -> None:
        """Stop the watch; a blocked iteration returns promptly (safe in a signal handler)."""
        self._cancelled = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _open(self) -> http.client.HTTPResponse:
        last: Exception | None = None
        for endpoint in self.client.endpoints:
            url = urlsplit(endpoint)
            cls = http.client.HTTPSConnection if url.scheme == "https" else \
                http.client.HTTPConnection
            conn = cls(url.hostname or "127.0.0.1", url.port or 2379, timeout=self.client.timeout)
            try:
                conn.request("POST", "/v3/watch", json.dumps(self.request),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                last = e
                continue
            if resp.status != 200:
                raise _error_from(resp.read(), resp.status)
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
            self._conn = conn
            return resp
        raise EtcdUnavailable(f"cannot open a watch on any etcd endpoint: {last}")

    @staticmethod
    def _parse(line: bytes) -> WatchBatch | None:
        line = line.strip()
        if not line:
            return None
        body = json.loads(line)
        if "error" in body:
            raise _error_from(line, 0)
        result = body.get("result", {})
        if result.get("compact_revision") and result.get("canceled"):
            raise EtcdCompacted(int(result["compact_revision"]))
        if result.get("canceled"):
            raise EtcdError(f"watch canceled by etcd: {result.get('cancel_reason', '')}")
        events = [_event(ev) for ev in result.get("events") or []]
        if not events:
            return None  # created / progress notifications
        return WatchBatch(revision=_revision(result), events=events)


def _error_from(raw: bytes, status: int) -> EtcdError:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return EtcdError(f"etcd HTTP {status}: {raw[:200]!r}")
    err = body.get("error", body)
    if isinstance(err, dict):  # streaming endpoints wrap errors as {"error": {...}}
        code = int(err.get("grpc_code") or err.get("code") or 0)
        return EtcdError(str(err.get("message", err)), code)
    return EtcdError(str(body.get("message") or err), int(body.get("code", 0)))
