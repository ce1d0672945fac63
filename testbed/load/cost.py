"""Cost: CPU-seconds the CNI daemons and the nodes spent per unit of work, from cgroup counters."""

from __future__ import annotations

import time
from typing import Any

from testbed.errors import ProviderError
from testbed.lifecycle.wait import parallel
from testbed.load.resources import running
from testbed.provider.base import Provider

ROLES = ("node", "cni")  # the nodes (pods, kube-proxy's rules, the kernel's work) and CNI daemons


def _counters(provider: Provider, cluster: str) -> dict[str, tuple[str, float]]:
    """{container: (role, CPU-seconds used since it started)} for every running node and CNI:
    the cumulative counter only, so a one-shot read (no engine CPU window to wait for)."""

    def one(info: Any) -> tuple[str, str, float | None]:
        try:
            return info.name, info.role, provider.stats(info.name, one_shot=True).cpu_s
        except ProviderError:  # stopped or removed meanwhile (a fault): not counted
            return info.name, info.role, None

    read = parallel(one, running(provider, cluster, ROLES))
    return {name: (role, cpu) for name, role, cpu in read if cpu is not None}


class CpuMeter:
    """The cgroup CPU counters of every node and CNI container read before and after a phase:
    their difference is the CPU spent across the whole phase, not one sample of it."""

    def __init__(self, provider: Provider, cluster: str) -> None:
        self.provider, self.cluster = provider, cluster
        self.before: dict[str, tuple[str, float]] = {}
        self.after: dict[str, tuple[str, float]] = {}
        self.seconds = 0.0

    def __enter__(self) -> CpuMeter:
        self.before = _counters(self.provider, self.cluster)
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.monotonic() - self._t0
        self.after = _counters(self.provider, self.cluster)

    def spent(self) -> dict[str, float]:
        """CPU-seconds per container over the phase (containers present at both reads)."""
        return {name: round(max(0.0, cpu - self.before[name][1]), 3)
                for name, (_, cpu) in self.after.items() if name in self.before}

    def by_role(self) -> dict[str, float]:
        """CPU-seconds per role (`node`, `cni`) over the phase."""
        out = dict.fromkeys(ROLES, 0.0)
        for name, cpu in self.spent().items():
            out[self.after[name][0]] += cpu
        return {role: round(v, 3) for role, v in out.items()}

    def row(self, path: str, work: str, amount: float) -> dict[str, Any] | None:
        """The cost row: CPU-seconds per Gbit moved (`gbit`) or per 1000 requests
        (`requests`); None when no work was done (nothing to divide by)."""
        if amount <= 0 or not self.after:
            return None
        roles = self.by_role()
        unit, per = ("per_gbit", amount) if work == "gbit" else ("per_1000_requests",
                                                                 amount / 1000)
        return {"path": path, "work": work, "amount": round(amount, 3),
                "seconds": round(self.seconds, 2),
                "cni_cpu_s": roles["cni"], "node_cpu_s": roles["node"],
                f"cni_cpu_s_{unit}": round(roles["cni"] / per, 4),
                f"node_cpu_s_{unit}": round(roles["node"] / per, 4),
                "by_container": self.spent()}
