"""The sections of one run's report: header, latency, RPS over time, throughput, resources."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from testbed.reports import describe, probes, sweeps
from testbed.reports.model import GENERATOR_BOUND, Chart, Section, Series, Table, fnum, num
from testbed.results.models import baseline_kind
from testbed.results.summary import COLUMNS

PERCENTILES = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"),
               ("max", "max_ms"))
CEILING = " (ceiling)"


def _table(tid: str, title: str, section: str, rows: Sequence[Mapping[str, Any]],
           collapsed: bool = False) -> Table:
    cols = [c for c in COLUMNS[section] if any(c in r for r in rows)] or list(COLUMNS[section])
    extra = sorted({k for r in rows for k in r} - set(COLUMNS[section]))
    cols += extra
    return Table(tid, title, cols, [[num(r.get(c)) for c in cols] for r in rows], collapsed)


def throughput_series_name(protocol: str, streams: int) -> str:
    """`TCP 1 stream`, `TCP 4 streams`, `UDP` (one stream), `UDP 4 streams`."""
    proto = protocol.upper()
    if proto == "UDP" and streams == 1:
        return "UDP"
    return f"{proto} {streams} stream{'s' if streams != 1 else ''}"


def _header(s: Mapping[str, Any], pre: str, links: list[tuple[str, str]]) -> Section:
    env = dict(s.get("environment") or {})
    rows: list[list[Any]] = []
    for key, value in env.items():
        if isinstance(value, Mapping):
            rows += [[f"{key}.{k}", str(v)] for k, v in value.items()]
        else:
            rows.append([key, num(value)])
    for path, mtu in (s.get("mtu") or {}).items():
        rows.append([f"mtu.{path}", num(mtu)])
    sec = Section(f"{pre}run", f"{describe.cni_label(s)}: run {s.get('run_id', '?')}",
                  warnings=describe.warnings(s),
                  builds=[(describe.build_kind(s), describe.build_sentence(s))],
                  lines=describe.facts(s) + ([describe.build_note(s)] if describe.build_note(s)
                                             else []),
                  links=links)
    if rows:
        sec.tables.append(Table(f"{pre}environment", "Environment", ["key", "value"], rows))
    gen = _generator(s.get("generator") or {}, pre)
    if gen is not None:
        sec.tables.append(gen)
    return sec


def _generator(gen: Mapping[str, Any], pre: str) -> Table | None:
    """Either {"workers": [{worker, cpu_pct, bound}]} or {path: {cpu_max, bound, ...}}."""
    title = "Load generator (bound = saturated"
    if isinstance(gen.get("threshold_pct"), int | float):
        title += f" at {gen['threshold_pct']:g}% CPU"
    title += ")"
    listed = gen.get("workers")
    if isinstance(listed, list) and listed:
        cols = list(dict.fromkeys(k for w in listed for k in w))
        return Table(f"{pre}generator", title, cols,
                     [[num(w.get(c)) for c in cols] for w in listed])
    per = {k: v for k, v in gen.items() if isinstance(v, Mapping)}
    if not per:
        return None
    cols = list(dict.fromkeys(k for v in per.values() for k in v))
    return Table(f"{pre}generator", title, ["path", *cols],
                 [[k, *(num(v.get(c)) for c in cols)] for k, v in per.items()])


def _latency(s: Mapping[str, Any], pre: str) -> Section:
    paths = list(s.get("paths") or [])
    http_base = [b for b in s.get("baselines") or [] if baseline_kind(b) == "http"]
    rows = paths + [{**b, "path": f"{b['path']}{CEILING}"} for b in http_base]
    bound = [str(p["path"]) for p in paths if p.get("generator_bound")]
    chart = Chart(f"{pre}latency", "bar", "Latency percentiles per path", "response time (ms)",
                  "path", [str(r["path"]) for r in rows],
                  [Series(label, [fnum(r.get(key)) for r in rows])
                   for label, key in PERCENTILES],
                  flagged=bound, note=f"⚠ {GENERATOR_BOUND}" if bound else "")
    sec = Section(f"{pre}latency", "Latency and requests per path", charts=[chart])
    sec.tables.append(_table(f"{pre}paths", "Paths (Locust stats over the load phase)",
                             "paths", paths))
    if http_base:
        sec.tables.append(_table(f"{pre}baselines", "Ceilings measured the same way "
                                 "(container-to-container over localhost, node-to-node over "
                                 "the host network)", "baselines", http_base))
    return sec


def since_start(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Seconds since the path's load started: Locust's Unix timestamps become offsets."""
    if not points or min(x for x, _ in points) < 1e9:
        return points
    t0 = min(x for x, _ in points)
    return [(x - t0, y) for x, y in points]


def _rps(s: Mapping[str, Any], pre: str) -> Section:
    ts = list(s.get("timeseries") or [])
    names = list(dict.fromkeys(str(r["path"]) for r in ts))
    bound = {str(p["path"]) for p in s.get("paths") or [] if p.get("generator_bound")}
    series = [Series(n, points=since_start([(float(r["t"]), float(r.get("rps") or 0.0))
                                            for r in ts if r["path"] == n])) for n in names]
    note = f"⚠ {', '.join(sorted(bound & set(names)))}: {GENERATOR_BOUND}" if bound & set(
        names) else ""
    chart = Chart(f"{pre}rps", "line", "Requests per second over time", "requests/s",
                  "seconds since the path's load started", series=series, note=note)
    sec = Section(f"{pre}rps", "Requests per second over time", charts=[chart])
    if ts:
        sec.tables.append(_table(f"{pre}timeseries", "Time series", "timeseries", ts,
                                 collapsed=True))
    return sec


def _throughput(s: Mapping[str, Any], pre: str) -> Section:
    rows = list(s.get("throughput") or [])
    base = [b for b in s.get("baselines") or [] if baseline_kind(b) == "throughput"]
    every = rows + [{**b, "path": f"{b['path']}{CEILING}"} for b in base]
    cats = list(dict.fromkeys(str(r["path"]) for r in every))
    kinds = list(dict.fromkeys((str(r.get("protocol", "tcp")), int(r.get("streams") or 1))
                               for r in every))
    kinds.sort(key=lambda k: (k[0] != "tcp", k[1]))
    series = []
    for proto, streams in kinds:
        value = {str(r["path"]): r.get("gbit_s") for r in every
                 if (str(r.get("protocol", "tcp")), int(r.get("streams") or 1)) == (proto, streams)}
        series.append(Series(throughput_series_name(proto, streams),
                             [fnum(value.get(c)) for c in cats]))
    chart = Chart(f"{pre}throughput", "bar", "Throughput per path (iperf3)", "Gbit/s", "path",
                  cats, series)
    sec = Section(f"{pre}throughput", "Throughput", charts=[chart])
    sec.tables.append(_table(f"{pre}throughput-rows", "Throughput", "throughput", rows))
    if base:
        sec.tables.append(_table(f"{pre}throughput-ceilings", "Throughput ceilings",
                                 "baselines", base))
    return sec


def _resources(s: Mapping[str, Any], pre: str) -> Section:
    rows = list(s.get("resources") or [])
    containers = list(dict.fromkeys(str(r["container"]) for r in rows))
    phases = list(dict.fromkeys(str(r.get("phase")) for r in rows))

    def series(key: str) -> list[Series]:
        by = {(str(r["container"]), str(r.get("phase"))): r.get(key) for r in rows}
        return [Series(p, [fnum(by.get((c, p))) for c in containers])
                for p in phases]

    charts = [Chart(f"{pre}cpu", "bar", "CPU per container (idle vs load)",
                    "CPU (% of one core)", "container", containers, series("cpu_pct")),
              Chart(f"{pre}memory", "bar", "Memory per container (idle vs load)",
                    "memory (MiB)", "container", containers, series("mem_mib"))]
    sec = Section(f"{pre}resources", "CPU and memory per container", charts=charts)
    sec.tables.append(_table(f"{pre}resources-rows", "Resources (cgroup stats)", "resources", rows))
    return sec


def sections(s: Mapping[str, Any], prefix: str = "",
             links: list[tuple[str, str]] | None = None) -> list[Section]:
    """Every section of one run's report; ids carry `prefix` so several runs share a page."""
    every = [_header(s, prefix, links or []), _latency(s, prefix), _rps(s, prefix),
             *sweeps.sections(s, prefix), probes.latency(s, prefix), _throughput(s, prefix),
             _resources(s, prefix), probes.cost(s, prefix)]
    return [sec for sec in every if sec is not None]
