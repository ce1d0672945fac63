"""The node daemon: the kubelet's readiness role and kube-proxy's iptables role, fed by etcd.

One process per node (`python3 -m testbed_node daemon start` launches it detached):
- readiness (kubelet): every period, GET /healthz on each local pod's HTTP containers at the
  pod IP, from the node, like a readinessProbe (periodSeconds 1, timeoutSeconds 1,
  failureThreshold 3, successThreshold 1); a container whose process is gone is not ready at
  once. The pod's ready state goes to /testbed/status/<pod> on a lease, so a dead daemon's
  pods drop out of every service when the lease runs out. Pods deleted from this node are
  removed from the registry (the kubelet's final delete).
- service proxy (kube-proxy, iptables mode): watch /testbed/ (at most `period` between
  looks), render the KUBE-* chains from the ready endpoints and restore them atomically when
  they change, and in full every RESYNC seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from etcd3gw.exceptions import Etcd3Exception

from testbed_contract import atomic
from testbed_contract.node import DAEMON_LOG_FILE, DAEMON_RUN_DIR, DAEMON_STATUS_FILE
from testbed_contract.registry import (
    PREFIX,
    Registry,
)
from testbed_node import AgentError, pods, proxy
from testbed_node.etcd import Etcd, EtcdCompacted, describe
from testbed_node.process import log_tail
from testbed_node.readiness import Readiness

RUN_DIR = DAEMON_RUN_DIR
LOCK_FILE = f"{RUN_DIR}/daemon.lock"
STATUS_FILE = DAEMON_STATUS_FILE
LOG_FILE = DAEMON_LOG_FILE
PERIOD = 1.0
RESYNC = 30.0
START_TIMEOUT = 20.0

log = logging.getLogger("testbed.daemon")


class ServiceProxy:
    """kube-proxy's sync loop body: registry in, KUBE-* chains out, only when they change."""

    def __init__(self, node: str, ipt: proxy.Iptables | None = None) -> None:
        self.node = node
        self.ipt = ipt or proxy.Iptables()
        self.random_fully = self.ipt.has_random_fully()
        self.last = ""
        self.last_full = 0.0
        self.syncs = 0
        self.last_sync_ms = 0.0
        self.ruleset = proxy.Ruleset()
        self.error = ""

    def sync(self, reg: Registry) -> bool:
        """Apply the registry's rules if they changed (or a full resync is due)."""
        rs = proxy.render(reg, random_fully=self.random_fully)
        text = rs.restore_input()
        full = time.monotonic() - self.last_full > RESYNC
        if text == self.last and not full:
            return False
        start = time.perf_counter()
        try:
            stale = self.ipt.stale_service_chains(rs.active_nat_chains)
            self.ipt.restore(rs.restore_input(stale))
            if full:  # after the restore: it declares the chains the jumps point to
                added = self.ipt.ensure_jumps()
                if added:
                    log.info("jump rules added: %s", ", ".join(added))
        except (proxy.IptablesError, OSError, subprocess.SubprocessError) as e:
            self.error = str(e)
            self.last, self.last_full = "", 0.0  # next look retries in full
            raise
        self.error = ""
        if full:
            self.last_full = time.monotonic()
        self.last_sync_ms = round((time.perf_counter() - start) * 1000, 2)
        self.syncs += 1
        if text != self.last:
            log.info("synced rev %d: %s (%.1f ms)", reg.revision, ", ".join(
                f"{k}={len(v)}" for k, v in sorted(rs.endpoints.items())) or "no services",
                self.last_sync_ms)
        self.last = text
        self.ruleset = rs
        return True


def _write_status(doc: dict[str, Any]) -> None:
    os.makedirs(RUN_DIR, exist_ok=True)
    atomic.write_text(STATUS_FILE, json.dumps(doc, indent=1))


def _acquire_lock() -> Any:
    os.makedirs(RUN_DIR, exist_ok=True)
    fh = open(LOCK_FILE, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    for attempt in range(10):  # a `daemon status` may hold a shared lock for a moment
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError as e:
            if attempt == 9:
                fh.close()
                raise AgentError("a daemon is already running on this node "
                                 f"(pid {running_pid()})") from e
            time.sleep(0.1)
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def running_pid() -> int | None:
    """The pid of the daemon holding the lock, or None when none runs."""
    try:
        fh = open(LOCK_FILE)  # noqa: SIM115
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def node_name() -> str:
    """This node's name (NODE_NAME, else the hostname)."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


def run(period: float = PERIOD, endpoints: str | None = None) -> int:
    """The daemon in the foreground until SIGTERM/SIGINT."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    lock = _acquire_lock()
    node = node_name()
    urls = endpoints or os.environ.get("ETCD_ENDPOINTS", "")
    if not urls:
        raise AgentError("no etcd endpoints: set ETCD_ENDPOINTS or pass --etcd-endpoints")
    etcd = Etcd(urls, timeout=5.0)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    mgr = pods.PodManager(node=node)
    readiness = Readiness(node, Etcd(urls, timeout=5.0), mgr.pods)  # its own HTTP session
    svc_proxy = ServiceProxy(node)
    bridge = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if bridge.exists() and bridge.read_text().strip() != "1":
        log.warning("bridge-nf-call-iptables is 0: same-node service traffic will not "
                    "be un-NATed on the bridge")
    log.info("daemon for %s: etcd %s, period %.1fs", node, urls, period)

    def probe_loop() -> None:
        while not stop.is_set():
            began = time.monotonic()
            try:
                readiness.tick()
            except Exception as e:  # keep probing through etcd hiccups
                log.warning("readiness tick failed: %s: %s", type(e).__name__, describe(e))
            stop.wait(max(0.05, period - (time.monotonic() - began)))

    threading.Thread(target=probe_loop, name="readiness", daemon=True).start()
    revision = 0
    while not stop.is_set():
        try:
            kvs, revision = etcd.get_prefix(PREFIX)
            reg = Registry.from_items(((kv.key, kv.value) for kv in kvs), revision)
            svc_proxy.sync(reg)
            with readiness.lock:
                local = dict(readiness.summary)
            _write_status({
                "node": node, "pid": os.getpid(), "revision": revision, "time": time.time(),
                "syncs": svc_proxy.syncs, "last_sync_ms": svc_proxy.last_sync_ms,
                "error": svc_proxy.error, "cluster_cidr": reg.cluster_cidr,
                "services": {k: [str(e) for e in v]
                             for k, v in svc_proxy.ruleset.endpoints.items()},
                "pods": {k: {"ready": v["ready"], "reason": v["reason"]}
                         for k, v in local.items()},
            })
            etcd.wait_prefix(PREFIX, revision + 1, timeout=period)
        except EtcdCompacted:
            continue
        except (Etcd3Exception, OSError, proxy.IptablesError, subprocess.SubprocessError) as e:
            log.warning("sync failed: %s: %s", type(e).__name__, describe(e))
            stop.wait(period)
    log.info("daemon for %s stopping", node)
    lock.close()
    return 0


def start(period: float = PERIOD, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Launch the daemon detached (idempotent); return once it has synced once."""
    pid = running_pid()
    if pid:
        return {"started": False, "running": True, "pid": pid, "log": LOG_FILE}
    Path(LOG_FILE).parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(STATUS_FILE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pods.PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "testbed_node", "daemon", "run", "--period", str(period)]
    with open(LOG_FILE, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd="/",
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = log_tail(LOG_FILE, 8) or "no log"
            raise AgentError(f"daemon exited with {proc.returncode}: {why}")
        doc = read_status()
        if doc.get("pid") == proc.pid:
            return {"started": True, "running": True, "pid": proc.pid, "log": LOG_FILE,
                    "revision": doc.get("revision")}
        time.sleep(0.1)
    why = log_tail(LOG_FILE, 8) or "no log"
    raise AgentError(f"daemon did not sync within {timeout:g}s: {why}")


def read_status() -> dict[str, Any]:
    """The last status the daemon wrote ({} before its first sync)."""
    try:
        doc = json.loads(Path(STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def status() -> dict[str, Any]:
    """Whether the daemon runs, and its last sync: revision, endpoints, local pod readiness."""
    doc = read_status()
    pid = running_pid()
    doc.update(running=pid is not None, pid=pid, log=LOG_FILE,
               age_s=round(time.time() - float(doc.get("time", 0)), 2) if doc else None)
    return doc


def stop(timeout: float = 10.0) -> dict[str, Any]:
    """SIGTERM the running daemon and wait for it to release its lock."""
    pid = running_pid()
    if not pid or pid < 0:
        return {"stopped": False, "reason": "not running"}
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid():
        time.sleep(0.1)
    return {"stopped": running_pid() is None, "pid": pid}
