"""CPU and memory of every node and CNI container, from the engine's cgroup stats."""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from testbed.lifecycle.wait import parallel
from testbed.provider.base import ContainerInfo, Provider

ROLES = ("node", "cni", "datastore", "ingress", "external")


def running(provider: Provider, cluster: str,
            roles: Collection[str] = ROLES) -> list[ContainerInfo]:
    """The cluster's running containers of the given roles."""
    return [c for c in provider.containers(cluster=cluster)
            if c.role in roles and c.status == "running"]


def snapshot(provider: Provider, cluster: str, phase: str) -> list[dict[str, Any]]:
    """One sample per container (the engine measures CPU over its own ~1 s window)."""
    infos = running(provider, cluster)

    def one(info: Any) -> dict[str, Any]:
        use = provider.stats(info.name)
        return {"container": info.name, "role": info.role, "phase": phase,
                "cpu_pct": use.cpu_pct, "mem_mib": use.mem_mib}

    return parallel(one, infos)


class Sampler:
    """Samples every few seconds in a thread while a load phase runs."""

    def __init__(self, provider: Provider, cluster: str, phase: str,
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
