"""CPU and memory of every node and CNI container, from the engine's cgroup stats."""

from __future__ import annotations

import threading
from typing import Any

from testbed.lifecycle.wait import parallel
from testbed.provider.docker import DockerProvider

ROLES = ("node", "cni", "datastore", "ingress", "external")


def _cpu_pct(s: dict[str, Any]) -> float:
    cpu, pre = s.get("cpu_stats", {}), s.get("precpu_stats", {})
    delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - \
        pre.get("cpu_usage", {}).get("total_usage", 0)
    system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
    return round(100.0 * delta / system * cpus, 2) if system > 0 and delta >= 0 else 0.0


def _mem_mib(s: dict[str, Any]) -> float:
    mem = s.get("memory_stats", {})
    stats = mem.get("stats", {})
    cache = stats.get("inactive_file", stats.get("total_inactive_file", 0))
    return round(float(mem.get("usage", 0) - cache) / 2**20, 1)


def snapshot(provider: DockerProvider, cluster: str, phase: str) -> list[dict[str, Any]]:
    """One sample per container (the engine measures CPU over its own ~1 s window)."""
    infos = [c for c in provider.containers(cluster=cluster)
             if c.role in ROLES and c.status == "running"]

    def one(info: Any) -> dict[str, Any]:
        s: Any = provider.client.containers.get(info.name).stats(stream=False)
        return {"container": info.name, "role": info.role, "phase": phase,
                "cpu_pct": _cpu_pct(s), "mem_mib": _mem_mib(s)}

    return parallel(one, infos)


class Sampler:
    """Samples every few seconds in a thread while a load phase runs."""

    def __init__(self, provider: DockerProvider, cluster: str, phase: str,
                 every_s: float = 3.0) -> None:
        self.provider, self.cluster, self.phase, self.every = provider, cluster, phase, every_s
        self.samples: list[list[dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append(snapshot(self.provider, self.cluster, self.phase))
            except Exception:  # a container going away mid-sample is not a result
                continue

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def mean(self) -> list[dict[str, Any]]:
        """Mean CPU and memory per container over the phase."""
        acc: dict[str, list[dict[str, Any]]] = {}
        for batch in self.samples:
            for row in batch:
                acc.setdefault(row["container"], []).append(row)
        return [{"container": name, "role": rows[0]["role"], "phase": self.phase,
                 "cpu_pct": round(sum(r["cpu_pct"] for r in rows) / len(rows), 2),
                 "mem_mib": round(sum(r["mem_mib"] for r in rows) / len(rows), 1),
                 "samples": len(rows)} for name, rows in sorted(acc.items())]
