"""A run summary as named metrics: one value per trial, its unit, and which way is better."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from testbed.analysis.stats import Better

# Paths without a CNI on them (the same-run floors): reported, never ranked between CNIs.
UNRANKED_PATHS = frozenset({"container-to-container", "node-to-node", "loopback"})


@dataclass
class Metric:
    """One named figure of a run: its trials' values in trial order."""

    key: str  # e.g. "paths.pod-to-service.rps", "latency.pod-to-service.rr.p50_us"
    unit: str
    better: Better
    values: list[float] = field(default_factory=list)
    generator_bound: bool = False  # a trial was taken with the generator saturated
    ranked: bool = True  # False for floors (no CNI on the path) and generator-bound figures

    def add(self, value: Any, bound: bool = False) -> None:
        """One more trial's value (None and non-numbers are skipped)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        self.values.append(float(value))
        if bound:
            self.generator_bound = True
            self.ranked = False


_HTTP: tuple[tuple[str, str, Better], ...] = (
    ("rps", "req/s", "higher"), ("p50_ms", "ms", "lower"), ("p99_ms", "ms", "lower"))
_LATENCY: tuple[tuple[str, str, Better], ...] = (
    ("p50_us", "µs", "lower"), ("p99_us", "µs", "lower"), ("p999_us", "µs", "lower"),
    ("rate_per_s", "1/s", "higher"))


class _Collector:
    def __init__(self) -> None:
        self.found: dict[str, Metric] = {}

    def put(self, key: str, unit: str, better: Better, value: Any, *, bound: bool = False,
            ranked: bool = True) -> None:
        metric = self.found.setdefault(key, Metric(key, unit, better, ranked=ranked))
        metric.add(value, bound)


def _trials(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(rows, key=lambda r: int(r.get("trial") or 0))


def _http(c: _Collector, section: str, rows: Iterable[Mapping[str, Any]]) -> None:
    for row in _trials(rows):
        if "requests" not in row and "rps" not in row:
            continue
        path = str(row.get("path"))
        bound = bool(row.get("generator_bound"))
        ranked = section == "paths" and path not in UNRANKED_PATHS
        for name, unit, better in _HTTP:
            c.put(f"{section}.{path}.{name}", unit, better, row.get(name), bound=bound,
                  ranked=ranked)
        requests = row.get("requests")
        if isinstance(requests, int) and requests > 0:
            c.put(f"{section}.{path}.failure_share", "share", "lower",
                  float(row.get("failures") or 0) / requests, ranked=ranked)


def _throughput(c: _Collector, rows: Iterable[Mapping[str, Any]]) -> None:
    for row in _trials(rows):
        path = str(row.get("path"))
        base = f"throughput.{path}.{row.get('protocol', 'tcp')}x{row.get('streams', 1)}"
        ranked = path not in UNRANKED_PATHS
        bound = bool(row.get("generator_bound"))
        c.put(f"{base}.gbit_s", "Gbit/s", "higher", row.get("gbit_s"), bound=bound,
              ranked=ranked)
        c.put(f"{base}.lost_pct", "%", "lower", row.get("lost_pct"), ranked=ranked)


def _latency(c: _Collector, rows: Iterable[Mapping[str, Any]]) -> None:
    for row in _trials(rows):
        path = str(row.get("path"))
        for name, unit, better in _LATENCY:
            c.put(f"latency.{path}.{row.get('kind')}.{name}", unit, better, row.get(name),
                  bound=bool(row.get("generator_bound")), ranked=path not in UNRANKED_PATHS)


def _sweeps(c: _Collector, section: Any) -> None:
    """{path: the latest sweep, with `trial_knees` when the run had several trials}."""
    for path, sweep in (section.items() if isinstance(section, Mapping) else ()):
        if not isinstance(sweep, Mapping):
            continue
        knees = sweep.get("trial_knees")
        for value in knees if isinstance(knees, list) else [sweep.get("knee_rps")]:
            # no knee after a sweep that ran: no offered rate held the objective, so 0
            held = 0.0 if value is None and sweep.get("points") else value
            c.put(f"sweeps.{path}.knee_rps", "req/s", "higher", held,
                  bound=bool(sweep.get("generator_bound")))


def _cost(c: _Collector, rows: Iterable[Mapping[str, Any]]) -> None:
    for row in _trials(rows):
        path = str(row.get("path"))
        for name, value in row.items():
            if name.endswith(("per_gbit", "per_1000_requests")):
                c.put(f"cost.{path}.{name}", "CPU-s", "lower", value,
                      ranked=path not in UNRANKED_PATHS)


_FAULT: tuple[tuple[str, str, Better], ...] = (
    ("failed_share", "share", "lower"), ("throughput_drop", "share", "lower"),
    ("first_success_after_s", "s", "lower"), ("p99_back_s", "s", "lower"),
    ("control_plane_s", "s", "lower"))


def _faults(c: _Collector, section: Any) -> None:
    """Per path and fault of the timeline (its kind and time): recovery, in trial order."""
    if not isinstance(section, Mapping):
        return
    for path, docs in section.items():
        for doc in _trials(d for d in docs if isinstance(d, Mapping) and "kind" in d):
            at = float(doc.get("at_s") or 0)  # no "." inside a key segment
            when = f"{at:g}s" if at.is_integer() else f"{round(at * 1000)}ms"
            base = f"faults.{path}.{doc['kind']}@{when}"
            for name, unit, better in _FAULT:
                c.put(f"{base}.{name}", unit, better, doc.get(name))
            pod = doc.get("new_pod")
            if isinstance(pod, Mapping):
                c.put(f"{base}.new_pod_addressed", "share", "higher",
                      1.0 if pod.get("addressed") else 0.0)


def _rows(section: Any) -> list[Mapping[str, Any]]:
    """The `rows` of a dict section ({"rows": [...]}: latency, cost), every trial's."""
    rows = section.get("rows") if isinstance(section, Mapping) else None
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def flatten(summary: Mapping[str, Any]) -> dict[str, Metric]:
    """Every metric a summary holds, keyed by name, in a stable order."""
    c = _Collector()
    _http(c, "paths", summary.get("paths") or [])
    _http(c, "baselines", [r for r in summary.get("baselines") or []
                           if "gbit_s" not in r])
    _throughput(c, [*(summary.get("throughput") or []),
                    *[r for r in summary.get("baselines") or [] if "gbit_s" in r]])
    _latency(c, _rows(summary.get("latency")))
    _sweeps(c, summary.get("sweeps"))
    _cost(c, _rows(summary.get("cost")))
    _faults(c, summary.get("faults"))
    return {k: m for k, m in c.found.items() if m.values}
