"""Readiness, the kubelet's part: httpGet probes of each local pod, and their status in etcd.

Every period each HTTP container of a local pod gets GET /healthz at the pod IP from the node
(periodSeconds 1, timeoutSeconds 1, failureThreshold 3, successThreshold 1). The verdicts go to
/testbed/status/<pod> on a lease, so a dead daemon's pods drop out of every service when the
lease runs out; pods deleted from this node are removed from the registry.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from etcd3gw.lease import Lease

from testbed_contract.node import HTTP_KINDS
from testbed_contract.registry import PODS, Pod, pod_key, status_key
from testbed_node.etcd import Etcd

PROBE_TIMEOUT = 1.0
FAILURE_THRESHOLD = 3
SUCCESS_THRESHOLD = 1
LEASE_TTL = 10

log = logging.getLogger("testbed.daemon")


def http_probe(ip: str, port: int, timeout: float = PROBE_TIMEOUT,
               path: str = "/healthz") -> tuple[bool, str]:
    """A kubelet httpGet probe: success is a status of 200-399."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "kube-probe/testbed",
                                           "Connection": "close"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return False, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        conn.close()
    return 200 <= status < 400, f"HTTP {status}"


@dataclass
class ProbeState:
    """One container's readiness probe: consecutive results and the verdict."""

    ready: bool = False
    successes: int = 0
    failures: int = 0
    last: str = ""

    def record(self, ok: bool, detail: str, failure_threshold: int = FAILURE_THRESHOLD,
               success_threshold: int = SUCCESS_THRESHOLD) -> None:
        """Count one result; flip the verdict at the thresholds, as the kubelet does."""
        self.last = detail
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= success_threshold:
                self.ready = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= failure_threshold:
                self.ready = False


class Readiness:
    """The kubelet's prober and status manager for the pods of one node."""

    def __init__(self, node: str, etcd: Etcd, local_pods: Callable[[], list[dict[str, Any]]],
                 probe: Callable[[str, int], tuple[bool, str]] = http_probe,
                 failure_threshold: int = FAILURE_THRESHOLD) -> None:
        self.node = node
        self.etcd = etcd
        self.local_pods = local_pods
        self.probe = probe
        self.failure_threshold = failure_threshold
        self.states: dict[tuple[str, str], ProbeState] = {}
        self.written: dict[str, str] = {}
        self.lease: Lease | None = None
        self.lease_renewed = 0.0
        self.summary: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def _ensure_lease(self) -> None:
        now = time.monotonic()
        if self.lease and now - self.lease_renewed < LEASE_TTL / 3:
            return
        if self.lease and self.etcd.keepalive(self.lease) > 0:
            self.lease_renewed = now
            return
        self.lease = self.etcd.grant(LEASE_TTL)
        self.lease_renewed = now
        self.written.clear()  # statuses on the old lease are gone or going: write them again
        log.info("status lease %x granted (ttl %ss)", self.lease.id, LEASE_TTL)

    def _evaluate(self, rec: dict[str, Any]) -> dict[str, Any]:
        ip = str(rec.get("ip") or "").split("/")[0]
        containers: dict[str, bool] = {}
        reasons: list[str] = []
        checks: list[tuple[ProbeState, str, int]] = []
        for c in rec.get("containers", []):
            state = self.states.setdefault((rec["name"], c["name"]), ProbeState())
            if not c.get("alive"):
                state.record(False, "container is not running", failure_threshold=1)
            elif c.get("kind") in HTTP_KINDS and c.get("port") and ip:
                checks.append((state, c["name"], int(c["port"])))
                continue
            else:
                state.ready = True  # a running container without a probe is ready
            containers[c["name"]] = state.ready
            if not state.ready:
                reasons.append(f"{c['name']}: {state.last}")
        results = list(_POOL.map(lambda chk: self.probe(ip, chk[2]), checks))
        for (state, name, _), (ok, detail) in zip(checks, results, strict=True):
            state.record(ok, detail, self.failure_threshold)
            containers[name] = state.ready
            if not state.ready:
                reasons.append(f"{name}: {detail}")
        running = rec.get("status") == "running"
        if not running:
            reasons.insert(0, f"pod is {rec.get('status')}")
        return {"ready": running and bool(containers) and all(containers.values()),
                "node": self.node, "ip": ip, "containers": containers,
                "reason": "; ".join(reasons)}

    def _forget(self, pod: str, mod_revision: int) -> bool:
        """Delete a pod's key and status in one transaction, if the key is still as read."""
        return self.etcd.delete_if_unmodified(pod_key(pod), mod_revision, status_key(pod))

    def tick(self) -> dict[str, dict[str, Any]]:
        """Probe once, publish what changed, drop pods that left this node; the statuses."""
        # The registry first, then the node: a pod missing here was deleted after its key
        # was read, and the delete below only goes through if nobody rewrote the key since.
        kvs, _ = self.etcd.get_prefix(PODS)
        local = {p["name"]: p for p in self.local_pods()}
        mine: list[tuple[Pod, int]] = []
        for kv in kvs:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                pod = Pod.from_json(json.loads(kv.value))
                if pod.node == self.node:
                    mine.append((pod, kv.mod_revision))
        self._ensure_lease()
        summary: dict[str, dict[str, Any]] = {}
        for pod, mod_revision in mine:
            rec = local.get(pod.name)
            if rec is None or rec.get("status") == "deleting":
                self.written.pop(pod.name, None)
                self.states = {k: v for k, v in self.states.items() if k[0] != pod.name}
                if self._forget(pod.name, mod_revision):
                    log.info("pod %s is gone from %s: removed from the registry", pod.name,
                             self.node)
                continue
            status = self._evaluate(rec)
            summary[pod.name] = status
            text = json.dumps(status, sort_keys=True)
            if self.written.get(pod.name) != text:
                self.etcd.put(status_key(pod.name), text, lease=self.lease)
                if self.written.get(pod.name) is None or \
                        json.loads(self.written[pod.name])["ready"] != status["ready"]:
                    log.info("pod %s ready=%s %s", pod.name, status["ready"], status["reason"])
                self.written[pod.name] = text
        for gone in set(self.written) - {p.name for p, _ in mine}:
            self.etcd.delete(status_key(gone))
            del self.written[gone]
        with self.lock:
            self.summary = summary
        return summary


_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="probe")
