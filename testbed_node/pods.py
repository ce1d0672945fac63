"""Pods: a named netns with its processes, wired by the CNI runtime, with state kept as JSON."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testbed_contract import atomic
from testbed_contract.agent import ProbeTarget
from testbed_contract.node import HTTP_KINDS
from testbed_node import UsageError, cni, netns
from testbed_node.podspec import ContainerSpec, check_name, check_specs
from testbed_node.probe import batch_limit
from testbed_node.process import PodError, http_ready, log_tail, owned, start_ticks, stop

STATE_DIR = "/var/lib/testbed/pods"
LOG_DIR = "/var/log/testbed/pods"
IFNAME = "eth0"
READY_TIMEOUT = 15.0
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

class PodManager:
    """Adds, deletes and lists the pods of this node."""

    def __init__(self, runtime: cni.CniRuntime | None = None,
                 conf_dir: str = cni.DEFAULT_CONF_DIR, state_dir: str = STATE_DIR,
                 log_dir: str = LOG_DIR, node: str | None = None) -> None:
        self.runtime = runtime or cni.CniRuntime()
        self.conf_dir = conf_dir
        self.state_dir = Path(state_dir)
        self.log_dir = Path(log_dir)
        self.node = node or os.environ.get("NODE_NAME") or socket.gethostname()

    # -- state -------------------------------------------------------------------------

    def _state_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        """A pod's record, or None."""
        try:
            rec = json.loads(self._state_path(name).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise PodError(f"pod {name}: unreadable state {self._state_path(name)}: {e}") from e
        return rec if isinstance(rec, dict) else None

    def _save(self, rec: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self._state_path(rec["name"])
        atomic.write_text(path, json.dumps(rec, indent=1))

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        lock_dir = self.state_dir / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / name, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def get(self, name: str) -> dict[str, Any]:
        """A pod's record or a PodError naming the pods that exist."""
        rec = self.load(check_name(name))
        if rec is None:
            known = ", ".join(r["name"] for r in self.pods()) or "none"
            raise PodError(f"no pod named {name!r} on {self.node} (pods: {known})")
        return rec

    def _rt(self, rec: dict[str, Any], ifname: str = "") -> cni.RuntimeConf:
        return cni.RuntimeConf(container_id=rec["container_id"], netns=rec["netns"],
                               ifname=ifname or rec.get("ifname", IFNAME))

    def _del_loopback(self, rec: dict[str, Any]) -> None:
        """DEL of the loopback attachment (clears its cache entry; lo goes with the netns)."""
        with contextlib.suppress(Exception):
            self.runtime.delete(cni.loopback(), self._rt(rec, "lo"))

    def _with_liveness(self, rec: dict[str, Any]) -> dict[str, Any]:
        out = dict(rec)
        out["containers"] = [dict(c, alive=owned(c, rec["netns"]))
                             for c in rec.get("containers", [])]
        return out

    # -- operations --------------------------------------------------------------------

    def add(self, name: str, specs: list[ContainerSpec],
            ready_timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Create the netns, CNI ADD eth0, start the containers, wait for http ones; record."""
        return self.add_many([(name, specs)], ready_timeout)[0]

    def add_many(self, pods: list[tuple[str, list[ContainerSpec]]],
                 ready_timeout: float = READY_TIMEOUT) -> list[dict[str, Any]]:
        """Add several pods in one go: wire and start them all, then wait for them all.

        Their workloads boot side by side; if one pod fails, every pod of the call is undone.
        """
        names = [check_name(name) for name, _ in pods]
        if len(set(names)) != len(names):
            raise UsageError(f"pod names repeat in one call: {', '.join(names)}")
        for _, specs in pods:
            check_specs(specs)
        with contextlib.ExitStack() as locks:
            for name in names:
                locks.enter_context(self._locked(name))
            started: list[tuple[dict[str, Any], cni.NetworkConfigList]] = []
            try:
                for name, specs in pods:
                    started.append(self._begin(name, specs))
                deadline = time.monotonic() + ready_timeout
                for rec, _ in started:
                    self._wait_ready(rec, ready_timeout, deadline)
            except Exception:
                for rec, netconf in started:
                    self._undo(rec, netconf, rec["containers"])
                raise
            for rec, _ in started:
                rec["status"] = "running"
                self._save(rec)
            return [self._with_liveness(rec) for rec, _ in started]

    def _begin(self, name: str, specs: list[ContainerSpec]
               ) -> tuple[dict[str, Any], cni.NetworkConfigList]:
        """Netns, CNI ADD and the containers' processes (not yet waited for); undone on error."""
        if self.load(name) is not None:
            raise PodError(f"pod {name!r} already exists on {self.node}; delete it first")
        if netns.exists(name):
            raise PodError(f"network namespace {netns.path_of(name)} exists without a pod "
                           "record; remove it (ip netns del) or pick another name")
        netconf = cni.load_dir(self.conf_dir)
        path = netns.create(name, lo_up=False)
        rec: dict[str, Any] = {
            "name": name, "container_id": secrets.token_hex(32), "node": self.node,
            "netns": path, "ifname": IFNAME, "network": netconf.name,
            "conf": netconf.source, "cni_version": netconf.cni_version,
            "status": "creating", "containers": [],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._save(rec)  # a crash from here on is cleaned up by `pod del`
        try:
            self.runtime.add(cni.loopback(), self._rt(rec, "lo"))
            result = self.runtime.add(netconf, self._rt(rec))
            rec.update(cni.summarize(result, IFNAME), interfaces=result.get("interfaces", []),
                       ips=result.get("ips", []), cni_result=result)
            self._fill_from_links(rec)
            self._save(rec)
            for spec in specs:
                rec["containers"].append(self._start(rec, spec))
                self._save(rec)
        except Exception:
            self._undo(rec, netconf, rec["containers"])
            raise
        return rec, netconf

    def _fill_from_links(self, rec: dict[str, Any]) -> None:
        """Take ip/mac from the interface itself when the CNI result left them out."""
        if rec.get("ip") and rec.get("mac"):
            return
        for link in netns.links(rec["netns"]):
            if link["name"] != rec["ifname"]:
                continue
            rec["mac"] = rec.get("mac") or link["mac"]
            if not rec.get("ip") and link["addresses"]:
                summary = cni.summarize({"ips": [{"address": link["addresses"][0]}]})
                rec.update(ip=summary["ip"], address=summary["address"], cidr=summary["cidr"])

    def _start(self, rec: dict[str, Any], spec: ContainerSpec) -> dict[str, Any]:
        env = dict(os.environ)
        env.update(POD_NAME=rec["name"], POD_IP=rec.get("ip") or "", NODE_NAME=self.node,
                   CONTAINER_NAME=spec.name, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        if spec.port is not None:
            env["PORT"] = str(spec.port)
        log = str(self.log_dir / rec["name"] / f"{spec.name}.log")
        argv = spec.command()
        try:
            pid = netns.spawn(rec["netns"], argv, log, env)
        except OSError as e:
            raise PodError(f"pod {rec['name']}: container {spec.name} ({argv[0]}) did not "
                           f"start: {e.strerror or e}") from e
        return {"name": spec.name, "kind": spec.kind, "port": spec.port, "argv": argv,
                "pid": pid, "start_ticks": start_ticks(pid), "log": log}

    def _wait_ready(self, rec: dict[str, Any], timeout: float, deadline: float) -> None:
        for c in rec["containers"]:
            while True:
                if not owned(c, rec["netns"]):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(c["pid"], os.WNOHANG)
                    raise PodError(f"pod {rec['name']}: container {c['name']} exited: "
                                   f"{log_tail(c['log']) or 'no output'}")
                if c["kind"] not in HTTP_KINDS or http_ready(rec["netns"], c["port"]):
                    break
                if time.monotonic() > deadline:
                    raise PodError(f"pod {rec['name']}: container {c['name']} did not answer "
                                   f"on localhost:{c['port']} within {timeout:g}s")
                time.sleep(0.02)

    def _undo(self, rec: dict[str, Any], netconf: cni.NetworkConfigList,
              containers: list[dict[str, Any]]) -> None:
        """Best-effort rollback of a failed add (processes, CNI DEL, netns, record)."""
        for c in containers:
            with contextlib.suppress(Exception):
                stop(c, rec["netns"])
        with contextlib.suppress(Exception):
            self.runtime.delete(netconf, self._rt(rec))
        self._del_loopback(rec)
        with contextlib.suppress(Exception):
            netns.delete(rec["netns"])
        self._state_path(rec["name"]).unlink(missing_ok=True)

    def _netconf_for(self, rec: dict[str, Any],
                     warnings: list[str]) -> cni.NetworkConfigList | None:
        """The config an attachment was added with (libcni's cache), else the current one."""
        cached = self.runtime.cached_config(rec["network"], self._rt(rec))
        if cached is not None:
            return cached
        try:
            current = cni.load_dir(self.conf_dir)
        except cni.CniError as e:
            warnings.append(f"CNI DEL skipped: {e}")
            return None
        if current.name != rec["network"]:
            warnings.append(f"CNI DEL skipped: network {rec['network']!r} is no longer "
                            f"configured (now {current.name!r})")
            return None
        return current

    def delete(self, name: str) -> dict[str, Any]:
        """Stop the processes, CNI DEL, remove the netns and the record; idempotent."""
        check_name(name)
        with self._locked(name):
            rec = self.load(name)
            if rec is None:
                return {"name": name, "deleted": False, "reason": "no such pod"}
            warnings: list[str] = []
            rec["status"] = "deleting"  # terminating first, as Kubernetes marks a pod, so
            self._save(rec)  # the node's daemon drops it at once, not as a failing pod
            stopped = {c["name"]: stop(c, rec["netns"]) for c in rec.get("containers", [])}
            netconf = self._netconf_for(rec, warnings)
            if netconf is not None:
                self.runtime.delete(netconf, self._rt(rec))
            self._del_loopback(rec)
            netns.delete(rec["netns"])
            self._state_path(name).unlink(missing_ok=True)
            for c in rec.get("containers", []):
                Path(c["log"]).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (self.log_dir / name).rmdir()
            return {"name": name, "deleted": True, "container_id": rec["container_id"],
                    "ip": rec.get("ip"), "containers": stopped, "warnings": warnings}

    def pods(self) -> list[dict[str, Any]]:
        """Every pod record on this node, with each container's liveness."""
        out = []
        if self.state_dir.is_dir():
            for path in sorted(self.state_dir.glob("*.json")):
                rec = self.load(path.stem)
                if rec is not None:
                    out.append(self._with_liveness(rec))
        return out

    def show(self, name: str) -> dict[str, Any]:
        """One pod's record, container liveness and the live interfaces of its netns."""
        rec = self._with_liveness(self.get(name))
        rec["links"] = netns.links(rec["netns"]) if os.path.exists(rec["netns"]) else []
        return rec

    def check(self, name: str) -> dict[str, Any]:
        """CNI CHECK of a pod's attachment against the current configuration."""
        rec = self.get(name)
        netconf = cni.load_dir(self.conf_dir)
        if netconf.name != rec["network"]:
            raise PodError(f"pod {name} is attached to network {rec['network']!r}, but the "
                           f"configured network is now {netconf.name!r}")
        checked = self.runtime.check(netconf, self._rt(rec))
        return {"pod": name, "network": netconf.name, "cni_version": netconf.cni_version,
                "checked": checked, "ok": True,
                "reason": "" if checked else "disableCheck is set in the configuration"}

    def _env(self, rec: dict[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(POD_NAME=rec["name"], POD_IP=rec.get("ip") or "", NODE_NAME=self.node)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        return env

    def exec(self, name: str, argv: list[str], rusage: bool = False) -> int:
        """Run a command in the pod's netns with this process's stdio; its exit code. With
        `rusage`, a last stderr line {"rusage": {"cpu_s", "wall_s"}} says what it used (the
        load generators are watched this way)."""
        rec = self.get(name)
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        try:
            code = netns.run(rec["netns"], argv, env=self._env(rec)).returncode
        except FileNotFoundError as e:
            raise PodError(f"command not found: {argv[0]}") from e
        if rusage:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            sys.stdout.flush()
            print(json.dumps({"rusage": {"cpu_s": round(cpu, 3),
                                         "wall_s": round(time.monotonic() - start, 3)}}),
                  file=sys.stderr, flush=True)
        return code if code >= 0 else 128 - code  # killed by a signal: 128+N like a shell

    def probe(self, name: str, url: str, count: int, timeout: float,
              headers: list[str] | None = None) -> dict[str, Any]:
        """HTTP probe from a process inside the pod's netns."""
        argv = ["testbed_node.probe", url, "--count", str(count), "--timeout", str(timeout)]
        for header in headers or []:
            argv += ["--header", header]
        result: dict[str, Any] = self._probe_in(name, argv, count * (timeout + 1))
        return result

    def probe_many(self, name: str, targets: list[ProbeTarget]) -> list[dict[str, Any]]:
        """Several HTTP probes from one process inside the pod's netns, run concurrently."""
        result: list[dict[str, Any]] = self._probe_in(
            name, ["testbed_node.probe", "--batch", json.dumps(targets)], batch_limit(targets))
        return result

    def _probe_in(self, name: str, args: list[str], worst: float) -> Any:
        """Run the probe module with `args` in the pod's netns; its report(s), each stamped
        with the pod and its address."""
        rec = self.get(name)
        limit = worst + 15
        try:
            proc = netns.run(rec["netns"], [sys.executable, "-m", *args], capture=True,
                             env=self._env(rec), timeout=limit)
        except subprocess.TimeoutExpired as e:
            raise PodError(f"probe from {name} did not finish within {limit:g}s") from e
        try:
            result = json.loads(proc.stdout)
        except ValueError as e:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise PodError(f"probe from {name} failed: {err[-1] if err else 'no output'}") from e
        for reply in result if isinstance(result, list) else [result]:
            reply.update(src=name, src_ip=rec.get("ip"))
        return result
