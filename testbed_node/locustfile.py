"""Locust users, one class per Kubernetes traffic path the testbed compares.

Targets come from TESTBED_TARGETS (JSON written by the orchestrator): for each path a list of
base URLs and optional headers. Every request is named after its path, so Locust's own stats
(CSV, HTML, JSON) group by path. On the master, a greenlet samples each worker's CPU (from
Locust's heartbeats) into TESTBED_GENERATOR_FILE, so a saturated generator is flagged instead
of being read as a slow CNI. Each worker counts its failed requests per second and error kind
(testbed_contract.errkind) and the master appends them to TESTBED_ERRORS_FILE, so a fault's
failures can be told apart by kind (Locust's own failures CSV has no timestamps).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from typing import Any

import gevent
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.env import Environment
from locust.runners import MasterRunner

from testbed_contract import errkind

TARGETS: dict[str, Any] = json.loads(os.environ.get("TESTBED_TARGETS", "{}"))
USER_RPS = float(os.environ.get("TESTBED_USER_RPS", "10"))
SEED = int(os.environ.get("TESTBED_SEED", "1"))
# A fault run sets a short request timeout, so a black-holed request fails within it (FastHttp
# waits 60 s by default, longer than a fault window).
TIMEOUT_S = float(os.environ.get("TESTBED_REQUEST_TIMEOUT_S", "60"))
# Workers report every 3 s by default: a fault run asks for every second (its timeline's
# resolution).
if os.environ.get("TESTBED_REPORT_INTERVAL_S"):
    import locust.runners

    locust.runners.WORKER_REPORT_INTERVAL = float(os.environ["TESTBED_REPORT_INTERVAL_S"])
rng = random.Random(SEED)


class _PathUser(FastHttpUser):
    """A user that sends GET / to one path's targets at a fixed per-user rate."""

    abstract = True
    path = ""
    host = "http://127.0.0.1"
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    # A fixed offered load per user keeps CNIs comparable; 0 means "as fast as possible".
    wait_time = constant_throughput(USER_RPS) if USER_RPS > 0 else constant(0)

    def on_start(self) -> None:
        """Pick this user's target among the path's URLs (seeded, so runs are repeatable)."""
        spec = TARGETS.get(self.path) or {}
        urls = spec.get("urls") or []
        if not urls:
            raise RuntimeError(f"no targets for path {self.path} in TESTBED_TARGETS")
        self.url = urls[rng.randrange(len(urls))]
        self.headers = spec.get("headers") or {}

    @task
    def get(self) -> None:
        """One request, named after the path."""
        with self.client.get(self.url, headers=self.headers, name=self.path,
                             catch_response=True) as resp:
            # a transport error (no answer: status 0) is left to Locust, which reports the
            # exception itself (refused, timed out...) rather than "HTTP 0"
            if getattr(resp, "error", None) is None and resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")


class PodToService(_PathUser):
    """Client pod -> ClusterIP -> a backend pod (kube-proxy DNAT, any node)."""

    path = "pod-to-service"


class NodePort(_PathUser):
    """Client pod -> a node's IP:nodePort -> a backend pod."""

    path = "nodeport"


class Ingress(_PathUser):
    """Outside client -> ingress controller (Host + path rules) -> service -> pod."""

    path = "ingress"


class ContainerToContainer(_PathUser):
    """Ceiling: a container to another container of the same pod over localhost."""

    path = "container-to-container"


class NodeToNode(_PathUser):
    """Ceiling: node to node over the host network, no CNI in the path."""

    path = "node-to-node"


# A path without targets here is not offered at all (Locust skips abstract classes), so the
# web UI's class picker lists exactly the paths this cluster can drive.
for _cls in (PodToService, NodePort, Ingress, ContainerToContainer, NodeToNode):
    _cls.abstract = _cls.path not in TARGETS

# Each worker measures its own CPU every second (Locust's own figure is refreshed only every
# few seconds and reads 0 at first) and sends it with its stats report to the master.
_own_cpu = {"pct": 0.0}
_worker_cpu: dict[str, float] = {}


def _measure_own_cpu() -> None:
    last, last_t = os.times(), time.monotonic()
    while True:
        gevent.sleep(1.0)
        now, now_t = os.times(), time.monotonic()
        used = (now.user + now.system) - (last.user + last.system)
        _own_cpu["pct"] = round(100.0 * used / max(now_t - last_t, 1e-6), 1)
        last, last_t = now, now_t


# Failed requests per (whole Unix second, error kind) since this worker's last report.
_errors: Counter[tuple[int, str]] = Counter()
ERRORS_FILE = os.environ.get("TESTBED_ERRORS_FILE", "")


@events.request.add_listener
def _count_error(exception: BaseException | None = None, **_: Any) -> None:
    if exception is not None:
        _errors[(int(time.time()), errkind.of_exception(exception))] += 1


@events.report_to_master.add_listener
def _report_cpu(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data["testbed_cpu_pct"] = _own_cpu["pct"]
    data["testbed_errors"] = [[t, kind, n] for (t, kind), n in _errors.items()]
    _errors.clear()


@events.worker_report.add_listener
def _collect_cpu(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if "testbed_cpu_pct" in data:
        _worker_cpu[client_id] = float(data["testbed_cpu_pct"])
    rows = data.get("testbed_errors")
    if rows and ERRORS_FILE:
        with open(ERRORS_FILE, "a") as fh:
            for t, kind, n in rows:
                fh.write(json.dumps({"t": t, "kind": kind, "count": n, "worker": client_id})
                         + "\n")


def _sample_workers(environment: Environment, out: str) -> None:
    runner = environment.runner
    assert isinstance(runner, MasterRunner)
    while True:
        gevent.sleep(1.0)
        rows = [{"t": round(time.time(), 3), "worker": w.id,
                 "cpu_pct": _worker_cpu.get(w.id, w.cpu_usage), "users": w.user_count}
                for w in runner.clients.values()]
        rows.append({"t": round(time.time(), 3), "worker": "master",
                     "cpu_pct": runner.current_cpu_usage, "users": runner.user_count})
        with open(out, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    out = os.environ.get("TESTBED_GENERATOR_FILE")
    if isinstance(environment.runner, MasterRunner):
        if out:
            gevent.spawn(_sample_workers, environment, out)
    else:
        gevent.spawn(_measure_own_cpu)
