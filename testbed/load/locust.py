"""Run one distributed Locust phase inside the cluster and read Locust's own stats back."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import StepError
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider
from testbed.results.atomic import write_bytes
from testbed_contract import errkind
from testbed_contract.node import LOCUSTFILE, in_pod

MASTER_PORT = 5557
ERRORS_FILE = "errors.jsonl"  # the master's failed requests per second and kind
# Locust warns at 90 % worker CPU; above this the generator, not the CNI, limits the path.
GENERATOR_BOUND_PCT = 90.0
USER_CLASS = {
    "pod-to-service": "PodToService", "nodeport": "NodePort", "ingress": "Ingress",
    "container-to-container": "ContainerToContainer", "node-to-node": "NodeToNode",
}


@dataclass(frozen=True)
class Place:
    """Where a Locust process runs: a container's own namespace, or a pod inside a node."""

    container: str
    pod: str | None = None

    def argv(self, cmd: list[str]) -> list[str]:
        """The command as exec'd in the container (through the agent for a pod)."""
        return in_pod(self.pod, cmd)

    def __str__(self) -> str:
        return f"{self.container}/{self.pod}" if self.pod else self.container


@dataclass(frozen=True)
class Profile:
    """Users, spawn rate, duration (s) and seed of a phase."""

    users: int
    spawn_rate: float
    duration_s: float
    seed: int
    user_rps: float = 10.0
    request_timeout_s: float = 0.0  # 0: Locust's own (60 s); a fault timeline sets a short one


@dataclass
class PhaseResult:
    """Locust's figures for one path, its time series, the generator's CPU, and its failed
    requests per second and error kind (`errors` rows {t, kind, count}; `error_kinds` the
    phase's totals, from Locust's failures CSV when the locustfile's file is missing:
    `errors_from` says which)."""

    path: str
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    generator_bound: bool = False
    generator_cpu_max: float = 0.0
    generator_cpu_mean: float = 0.0
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    generator: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    errors_from: str = ""
    files: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The `paths[]` entry of summary.json."""
        keys = ("path", "requests", "failures", "rps", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                "max_ms", "generator_bound", "generator_cpu_max", "generator_cpu_mean")
        return {k: getattr(self, k) for k in keys}


def _num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "", "N/A") else 0.0
    except ValueError:
        return 0.0


def parse_stats(path: str, stats_csv: str) -> dict[str, Any]:
    """The row of Locust's `_stats.csv` named after `path`."""
    for row in csv.DictReader(io.StringIO(stats_csv)):
        if row.get("Name") == path:
            return {
                "requests": int(_num(row.get("Request Count"))),
                "failures": int(_num(row.get("Failure Count"))),
                "rps": round(_num(row.get("Requests/s")), 2),
                "p50_ms": _num(row.get("50%")), "p90_ms": _num(row.get("90%")),
                "p95_ms": _num(row.get("95%")), "p99_ms": _num(row.get("99%")),
                "max_ms": round(_num(row.get("Max Response Time")), 2),
            }
    return {}


def parse_history(path: str, history_csv: str) -> list[dict[str, Any]]:
    """Locust's `_stats_history.csv` rows for `path`, as a time series."""
    out = []
    for row in csv.DictReader(io.StringIO(history_csv)):
        if row.get("Name") != path:
            continue
        out.append({"t": int(_num(row.get("Timestamp"))), "users": int(_num(row.get("User Count"))),
                    "rps": round(_num(row.get("Requests/s")), 2),
                    "failures_per_s": round(_num(row.get("Failures/s")), 2),
                    "p50_ms": _num(row.get("50%")), "p95_ms": _num(row.get("95%")),
                    "p99_ms": _num(row.get("99%")),
                    "requests": int(_num(row.get("Total Request Count"))),
                    "failures": int(_num(row.get("Total Failure Count")))})
    return out


def parse_errors(jsonl: str) -> list[dict[str, Any]]:
    """The locustfile's failed-request counts ({t, kind, count, worker} lines, one per worker
    report) summed over workers: one row per (whole Unix second, kind), in time order."""
    counts: dict[tuple[int, str], int] = {}
    for line in jsonl.splitlines():
        if line.strip():
            row = json.loads(line)
            key = (int(row["t"]), str(row["kind"]))
            counts[key] = counts.get(key, 0) + int(row["count"])
    return [{"t": t, "kind": k, "count": n} for (t, k), n in sorted(counts.items())]


def parse_failures(path: str, failures_csv: str) -> dict[str, int]:
    """{kind: count} from Locust's `_failures.csv` rows for `path` (a whole phase, no times),
    the most frequent first."""
    return totals([{"kind": errkind.of_text(row.get("Error") or ""),
                    "count": int(_num(row.get("Occurrences")))}
                   for row in csv.DictReader(io.StringIO(failures_csv))
                   if row.get("Name") == path])


def totals(errors: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """{kind: count} of error rows, the most frequent first."""
    out: dict[str, int] = {}
    for row in errors:
        out[str(row["kind"])] = out.get(str(row["kind"]), 0) + int(row["count"])
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def judge_generator(samples: list[dict[str, Any]]) -> tuple[bool, float, float]:
    """(bound, max, mean) of worker CPU while users were running."""
    busy = [float(s["cpu_pct"]) for s in samples
            if s.get("worker") != "master" and s.get("users")]
    if not busy:
        return False, 0.0, 0.0
    peak, mean = max(busy), statistics.fmean(busy)
    return peak >= GENERATOR_BOUND_PCT or mean >= 0.8 * GENERATOR_BOUND_PCT, round(peak, 1), \
        round(mean, 1)


class NoStats(StepError):
    """The phase ended before Locust's users sent a request (they started too late)."""


class LocustPhase:
    """One path under load: a master, workers elsewhere in the cluster, Locust's CSV/HTML."""

    def __init__(self, provider: Provider, path: str, master: Place, master_ip: str,
                 workers: list[Place], targets: dict[str, Any], profile: Profile) -> None:
        self.provider = provider
        self.path = path
        self.master = master
        self.master_ip = master_ip
        self.workers = workers
        self.targets = targets
        self.profile = profile
        self.workdir = f"/tmp/testbed-load/{path}"

    def _env(self) -> dict[str, str]:
        return {"TESTBED_TARGETS": json.dumps(self.targets),
                "TESTBED_SEED": str(self.profile.seed),
                "TESTBED_USER_RPS": str(self.profile.user_rps),
                **({"TESTBED_REQUEST_TIMEOUT_S": str(self.profile.request_timeout_s),
                    "TESTBED_REPORT_INTERVAL_S": "1"}
                   if self.profile.request_timeout_s else {}),
                "TESTBED_GENERATOR_FILE": f"{self.workdir}/generator.jsonl",
                "TESTBED_ERRORS_FILE": f"{self.workdir}/{ERRORS_FILE}",
                "PYTHONUNBUFFERED": "1"}

    def _install(self) -> None:
        containers = {self.master.container, *(w.container for w in self.workers)}
        for c in containers:  # the locustfile itself ships in the node image
            self.provider.exec(c, ["mkdir", "-p", self.workdir])
        # the master appends to these: start them afresh (a trial again on the same cluster)
        self.provider.exec(self.master.container, ["rm", "-f", f"{self.workdir}/generator.jsonl",
                                                   f"{self.workdir}/{ERRORS_FILE}"])

    def run(self, out_dir: Path) -> PhaseResult:
        """Start the workers, run the master to completion, copy Locust's files to out_dir."""
        self._install()
        cls = USER_CLASS[self.path]
        env = self._env()

        def start_worker(w: tuple[int, Place]) -> None:
            i, place = w
            self.provider.spawn(place.container, place.argv([
                "python3", "-m", "locust", "-f", LOCUSTFILE, "--worker",
                "--master-host", self.master_ip, "--master-port", str(MASTER_PORT),
                "--logfile", f"{self.workdir}/worker-{i}.log", cls]), env)

        parallel(start_worker, list(enumerate(self.workers)))
        prefix = f"{self.workdir}/locust"
        p = self.profile
        res = self.provider.exec(self.master.container, self.master.argv([
            "python3", "-m", "locust", "-f", LOCUSTFILE, "--master", "--headless",
            "--master-bind-port", str(MASTER_PORT),
            "--expect-workers", str(len(self.workers)), "--expect-workers-max-wait", "30",
            "-u", str(p.users), "-r", str(p.spawn_rate), "-t", f"{p.duration_s:g}s",
            "--stop-timeout", "2", "--csv", prefix, "--csv-full-history",
            "--html", f"{self.workdir}/locust_report.html",
            "--logfile", f"{self.workdir}/master.log", "--only-summary", cls]), env)
        return self.collect(out_dir, res.stderr)

    def collect(self, out_dir: Path, master_output: str = "") -> PhaseResult:
        """Copy Locust's artifacts out and parse them (also after an interrupted run)."""
        try:
            files = self.provider.get_files(self.master.container, self.workdir)
        except Exception as e:
            raise StepError(f"{self.path}: Locust left no results in {self.master}: {e}") from e
        dest = out_dir / "locust" / self.path
        dest.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            write_bytes(dest / Path(name).name, data)
        stats = files.get("locust_stats.csv", b"").decode()
        row = parse_stats(self.path, stats)
        if not row:
            log = files.get("master.log", b"").decode()[-800:] or master_output[-800:]
            raise NoStats(f"{self.path}: Locust produced no stats for this path "
                            f"(master {self.master}): {log.strip()}")
        result = PhaseResult(self.path, **row)
        result.timeseries = parse_history(self.path, files.get("locust_stats_history.csv",
                                                                b"").decode())
        result.generator = [json.loads(ln) for ln in files.get("generator.jsonl", b"")
                            .decode().splitlines() if ln.strip()]
        (result.generator_bound, result.generator_cpu_max,
         result.generator_cpu_mean) = judge_generator(result.generator)
        if ERRORS_FILE in files:
            result.errors = parse_errors(files[ERRORS_FILE].decode())
            result.error_kinds, result.errors_from = totals(result.errors), ERRORS_FILE
        elif result.failures:  # no per-second counts (an older node image): the phase's
            result.error_kinds = parse_failures(
                self.path, files.get("locust_failures.csv", b"").decode())
            result.errors_from = "locust_failures.csv"
        result.files = sorted(str(dest / Path(n).name) for n in files)
        return result
