"""The host's etcd client: etcd3gw on the cluster etcd's client port, published on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Any

from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception
from etcd3gw.utils import _decode, _encode, _increment_last_byte

from testbed.cluster import model
from testbed.errors import ProviderError, StepError
from testbed.provider.base import Provider

CLIENT_PORT = "2379/tcp"  # what `up` publishes on 127.0.0.1 (an ephemeral host port)
TIMEOUT = 10.0


def _why(e: BaseException) -> str:
    return str(getattr(e, "detail_text", None) or e).strip()


class ClusterEtcd:
    """One cluster's etcd, reached from the host; every failure is a one-line StepError."""

    def __init__(self, provider: Provider, cluster: str, timeout: float = TIMEOUT) -> None:
        self.name = model.etcd_name(cluster)
        try:
            port = provider.published_port(self.name, CLIENT_PORT)
        except ProviderError as e:
            raise StepError(f"cannot reach {self.name} from the host: {e}") from e
        self.client = Etcd3Client(host="127.0.0.1", port=port, timeout=timeout, api_path="/v3/")

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Etcd3Exception as e:
            raise StepError(f"{self.name}: {what} failed: {_why(e)}") from e

    def healthy(self) -> bool:
        """Whether etcd answers a status request."""
        try:
            self.client.status()
        except Etcd3Exception:
            return False
        return True

    def wait_healthy(self, timeout: float) -> None:
        """Until etcd answers, or a StepError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise StepError(f"timed out after {timeout:.0f}s waiting for etcd to become "
                                "healthy")
            time.sleep(0.05)

    def get(self, key: str) -> bytes | None:
        """One key's raw value, or None when absent."""
        values = self._call(f"get {key}", self.client.get, key)
        return bytes(values[0]) if values else None

    def range(self, prefix: str, keys_only: bool = False) -> tuple[list[tuple[str, bytes]], int]:
        """Every key under `prefix` with its value, and the revision the read saw."""
        body = {"key": _encode(prefix), "range_end": _encode(_increment_last_byte(prefix)),
                "keys_only": keys_only}
        doc = self._call(f"read {prefix}", self.client.post,
                         self.client.get_url("/kv/range"), json=body)
        items = [(_decode(kv["key"]).decode(errors="replace"),
                  _decode(kv["value"]) if "value" in kv else b"")
                 for kv in doc.get("kvs") or []]
        return items, int(doc.get("header", {}).get("revision", 0))

    def put(self, key: str, value: str) -> None:
        """Write one key."""
        self._call(f"put {key}", self.client.put, key, value)

    def delete(self, key: str) -> None:
        """Remove one key (absent is fine)."""
        self._call(f"delete {key}", self.client.delete, key)
