"""The main job: a run as named steps, measured data stored as it arrives, always torn down."""

from __future__ import annotations

import contextlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import console
from testbed.check import matrix
from testbed.cluster import model
from testbed.cluster.handle import Cluster
from testbed.cni import Cni
from testbed.errors import CheckFailed, TestbedError
from testbed.faults import play
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.pipeline import Step
from testbed.lifecycle.pipeline import run as run_steps
from testbed.load import resources
from testbed.load.cost import CpuMeter
from testbed.load.locust import LocustPhase, NoStats, PhaseResult, Profile
from testbed.provider.base import Provider
from testbed.results import RunDir, Store
from testbed.results.atomic import write_text
from testbed.results.summary import ROW_SECTIONS
from testbed.run import latency as run_latency
from testbed.run import sweeps, targets
from testbed.run.options import RunOptions
from testbed.scenario import Scenario

# A failing case on one of these paths means the path under load is broken: stop the run.
GATES = {
    "pod-to-service": ("pod-to-pod-cross-node", "pod-to-service"),
    "nodeport": ("pod-to-pod-cross-node", "pod-to-nodeport"),
    "ingress": ("pod-to-pod-cross-node", "outside-to-ingress"),
}
CEILINGS = ("container-to-container", "node-to-node")
PROBE_MAX_S = 2
FAULT_TIMEOUT_S = 2.0  # Locust's request timeout under a fault timeline


@dataclass
class Run:
    """Everything one run shares between its steps."""

    provider: Provider
    scenario: Scenario
    cni: Cni
    backend: str
    opts: RunOptions
    out: Path
    name: str = ""
    rundir: RunDir | None = None
    handle: Cluster | None = None  # owns the cluster: its rollback and its teardown
    cluster: UpContext | None = None
    started: float = field(default_factory=time.monotonic)
    load_s: float = 0.0
    current: LocustPhase | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    trials: int = 1  # how many times the trial steps repeat on the same cluster
    trial: int = 1  # the trial being measured (every row recorded carries it)
    # (dict section, key) -> what every trial so far recorded under it (see `record`)
    kept: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    interrupted: bool = False
    failure: TestbedError | None = None

    @property
    def profile(self) -> Profile:
        """Locust's knobs from the scenario (after command-line overrides)."""
        p = self.scenario.load
        return Profile(p.users, p.spawn_rate, p.duration_s, p.seed,
                       request_timeout_s=FAULT_TIMEOUT_S if self.scenario.faults else 0.0)

    @property
    def probe_seconds(self) -> int:
        """Seconds per iperf3 / sockperf / wrk measurement: the load duration, 1 to 2 (tens of
        thousands of round trips, and past TCP's slow start on these links)."""
        return max(1, min(PROBE_MAX_S, int(self.scenario.load.duration_s)))

    def record(self, section: str, rows: Any) -> None:
        """Durably keep a measurement the moment it exists (rows tagged with their trial)."""
        assert self.rundir is not None
        if section in ROW_SECTIONS:
            rows = [{**r, "trial": self.trial} for r in ([rows] if isinstance(rows, dict)
                                                          else rows)]
        elif section in ("latency", "cost"):  # {"rows": every trial's rows so far}
            rows = {"rows": self._keep(section, "rows", rows["rows"])}
        elif section in ("faults", "errors"):  # {path: every trial's faults / error kinds}
            rows = {path: self._keep(section, path, docs) for path, docs in rows.items()}
        elif section == "sweeps":  # {path: the latest trial's sweep, with every trial's knee}
            rows = {path: {**row, "trial": self.trial,
                           "trial_knees": self._keep(section, path, [row.get("knee_rps")])}
                    for path, row in rows.items()}
        self.rundir.record_partial(section, rows)

    def _keep(self, section: str, key: str, items: list[Any]) -> list[Any]:
        """A dict section's entries are replaced key by key when recorded again, so for these
        the run keeps every trial's items itself (dicts tagged with their trial)."""
        kept = self.kept.setdefault((section, key), [])
        kept += [{**i, "trial": self.trial} if isinstance(i, dict) else i for i in items]
        return list(kept)

    def record_cost(self, row: dict[str, Any] | None) -> None:
        """One more cost row (CPU per unit of work) for the `cost` section."""
        if row is not None:
            self.record("cost", {"rows": [row]})


PACKAGES = ("iproute2", "iptables", "ipset", "python3", "containernetworking-plugins",
            "iperf3", "bird", "runit", "libpcap0.8", "etcd-server", "nginx-light")


def _packages(run: Run) -> dict[str, str]:
    """Debian package versions inside the running node, CNI, etcd and ingress containers."""
    found: dict[str, str] = {}
    for info in run.provider.containers(cluster=run.name):
        if info.role == "node" and not info.name.endswith("-node-1"):
            continue
        res = run.provider.exec(info.name, ["dpkg-query", "-W", "-f", "${Package}=${Version}\n",
                                            *PACKAGES])
        for line in res.stdout.splitlines():
            name, _, version = line.partition("=")
            if version:
                found[name] = version
    return dict(sorted(found.items()))


def _digests(run: Run, images: dict[str, str]) -> dict[str, str]:
    # An image that vanished is reported, not fatal.
    return {role: run.provider.images.image_id(ref) or "unknown" for role, ref in images.items()}


def _sources(run: Run, images: dict[str, str]) -> dict[str, Any]:
    """Per source-built image: module@version, checksum, release, Go version and VCS
    revision of each Go build in it, from the labels the image builder wrote."""
    out: dict[str, Any] = {}
    for role, ref in images.items():
        labels = run.provider.images.labels(ref)
        if labels is None:  # an image that vanished is reported, not fatal
            continue
        builds = {k.removeprefix("io.testbed.source."): json.loads(v)
                  for k, v in labels.items() if k.startswith("io.testbed.source.")}
        if labels.get("io.testbed.adaptations"):
            builds["adaptations"] = labels["io.testbed.adaptations"]
        if builds:
            out[role] = builds
    return out


def _environment(run: Run) -> dict[str, Any]:
    info = run.provider.engine()
    assert run.cluster is not None and run.cluster.selection is not None
    images = run.cluster.images()
    return {
        "image_digests": _digests(run, images),
        "packages": _packages(run),
        "sources": _sources(run, images),
        "release": run.cluster.selection.release, "module": run.cluster.selection.module,
        "kernel": platform.release(), "docker_version": info["engine_version"],
        "docker_api": info["api_version"], "scenario": run.scenario.name,
        "scenario_hash": run.scenario.digest(), "nodes": run.scenario.nodes,
        "build_note": run.cluster.selection.note,
        "images": run.cluster.images(),
    }


def bring_up(run: Run) -> None:
    """The cluster, through exactly the same steps (and rollback) as `up`."""
    assert run.handle is not None
    run.cluster = run.handle.up(run.scenario, run.cni, run.backend)
    assert run.cluster.selection is not None
    run.record("meta", {"build": run.cluster.selection.build,
                        "release": run.cluster.selection.release,
                        "module": run.cluster.selection.module,
                        "images": run.cluster.images()})
    run.record("environment", _environment(run))


def check_paths(run: Run) -> None:
    """The connectivity matrix; a broken hop on a path under test stops the run (exit 1)."""
    cluster = model.find(run.provider, run.name)
    cases = matrix.run(run.provider, cluster)
    doc = matrix.report(cluster, cases)
    assert run.rundir is not None
    write_text(run.rundir.path / "check.json", json.dumps(doc, indent=2) + "\n")
    gated = {p for path in run.scenario.load.paths for p in GATES[path]}
    broken = [c for c in cases if c.status == "fail" and c.path in gated]
    if broken:
        c = broken[0]
        raise CheckFailed(f"path {c.path} is broken at hop {c.src} -> {c.dst}: {c.reason}")


def idle_resources(run: Run) -> None:
    """CPU and memory of every node and CNI container before any load."""
    run.record("resources", resources.snapshot(run.provider, run.name, "idle"))


def _phase(run: Run, path: str, section: str) -> PhaseResult:
    assert run.rundir is not None
    phase = targets.phase(run.provider, run.name, run.scenario, path, run.profile)
    run.current = phase
    player = play.start(run.provider, run.name, run.scenario, path, phase) if section == "paths" \
        else None  # the scenario's fault timeline, undone whatever happens
    with resources.Sampler(run.provider, run.name, f"load:{path}") as sampler, \
            CpuMeter(run.provider, run.name) as meter, play.finishing(player):
        start = time.monotonic()
        try:
            result, partial = play.run_phase(phase, run.rundir.path, player)
        except NoStats:
            if player is not None:  # a fault timeline is played once
                raise
            console.info(f"   ! {path}: the phase ended before Locust's users sent a request "
                         "(they started late on a loaded machine): running it once more")
            result, partial = play.run_phase(phase, run.rundir.path, None)
        run.load_s += time.monotonic() - start
    run.current = None
    row = result.summary()
    run.record_cost(meter.row(path, "requests", float(row.get("requests") or 0)))
    if partial:
        row["partial"] = partial
    if player is not None:
        run.record("faults", {path: play.measure(player, result)})
    if section == "baselines":
        row["kind"] = "locust"
    run.record(section, row)
    run.record("timeseries", [{"path": path, **t} for t in result.timeseries])
    if result.errors_from:
        run.record("errors", {path: [{"from": result.errors_from, "kinds": result.error_kinds,
                                      "rows": result.errors}]})
    run.record("resources", sampler.mean())
    run.record("generator", {path: {"cpu_max": result.generator_cpu_max,
                                    "cpu_mean": result.generator_cpu_mean,
                                    "bound": result.generator_bound,
                                    "workers": len(phase.workers)}})
    if result.generator_bound:
        console.info(f"   ! {path}: the load generator saturated (worker CPU peak "
                     f"{result.generator_cpu_max:.0f}%): flagged generator-bound")
    return result


def ceilings(run: Run) -> None:
    """Container-to-container over localhost and node-to-node over the host network."""
    if run.scenario.faults:  # a fault run measures recovery, not ratios: no ceiling phases
        console.info("   ceilings skipped: the scenario has a fault timeline")
        return
    for path in CEILINGS:
        with console.step(f"Ceiling: {path}"):
            _phase(run, path, "baselines")


def load(run: Run) -> None:
    """One Locust phase per path under test, each with its resources sampled."""
    p = run.profile
    for path in run.scenario.load.paths:
        with console.step(f"Load: {path} ({p.users} users, {p.duration_s:g}s)"):
            _phase(run, path, "paths")


def _iperf(run: Run, measured: list[Any], section: str) -> None:
    rows = []
    for path, block in measured:
        with CpuMeter(run.provider, run.name) as meter:
            found = block()
        rows += [t.summary() for t in found]
        moved = sum(t.gbit_s * run.probe_seconds for t in found)
        run.record_cost(meter.row(path, "gbit", moved))
    if section == "baselines":
        rows = [{**r, "kind": "throughput"} for r in rows]
    run.record(section, rows)
    run.record("mtu", {r["path"]: r.get("mtu") for r in rows})


def throughput(run: Run) -> None:
    """iperf3 node-to-node (the no-CNI floor), then pod-to-pod across nodes and
    pod-to-service, with each path's MTU and the CPU each cost."""
    p, name, spec = run.provider, run.name, run.scenario
    secs = run.probe_seconds
    _iperf(run, [("node-to-node", lambda: targets.node_throughput(p, name, secs))],
           "baselines")
    _iperf(run, targets.throughput(p, name, spec, secs), "throughput")


def latency(run: Run) -> None:
    """RR and CRR round trips per path in microseconds, beside loopback and node-to-node."""
    found = run_latency.measure(run.provider, run.name, run.scenario, run.probe_seconds)
    run.record("latency", {"rows": [m.summary() for m in found]})


SETUP: list[Step[Run]] = [
    Step("Bringing the cluster up", bring_up), Step("Checking the paths under test", check_paths),
    Step("Measuring idle resources", idle_resources)]
# Repeated --trials times on the same cluster.
TRIAL: list[Step[Run]] = [
    Step("Measuring ceilings", ceilings, quiet=True), Step("Driving load", load, quiet=True),
    Step("Sweeping offered load (vegeta)", sweeps.sweep, quiet=True),
    Step("Measuring RR/CRR latency (sockperf, wrk)", latency),
    Step("Measuring throughput (iperf3)", throughput)]


def execute(run: Run) -> dict[str, Any]:
    """Run every step through the cluster handle; whatever happens, store what was measured,
    report it, and (unless --keep) tear the cluster down as the handle's block ends."""
    with Cluster(run.provider, run.name, keep=run.opts.keep) as handle:
        run.handle = handle
        try:
            if run.trials > 1:
                run.record("trials", {"n": run.trials})
            if attempt(run, SETUP):
                for t in range(1, run.trials + 1):
                    if not trial(run, t):
                        break
        finally:
            finish(run)
    return outcome(run)


def trial(run: Run, number: int) -> bool:
    """The trial steps once more, every row tagged with `number`; False if they failed."""
    run.trial = number
    if run.trials > 1:
        console.info(f" trial {number}/{run.trials}: {run.cni.name}:{run.backend}")
    return attempt(run, TRIAL)


def attempt(run: Run, steps: list[Step[Run]]) -> bool:
    """Run steps; a failure is kept on the run (False), Ctrl-C keeps what was measured."""
    assert run.rundir is not None
    try:
        run_steps(steps, run)
        return True
    except KeyboardInterrupt:
        run.interrupted = True
        console.info(" ! interrupted: keeping what was measured and tearing down")
        if run.current is not None:
            with contextlib.suppress(TestbedError):
                run.record("paths", run.current.collect(run.rundir.path).summary())
        raise
    except TestbedError as e:  # the runner names the step of any unexpected error
        run.failure = e
        return False


def finish(run: Run) -> dict[str, Any]:
    """Finalize the run's summary (status from what happened) and render its report."""
    from testbed.reports import render_run

    assert run.rundir is not None
    total = time.monotonic() - run.started
    summary: dict[str, Any] = {
        "duration_s": round(total, 2), "interrupted": run.interrupted,
        "load_s": round(run.load_s, 2), "overhead_s": round(total - run.load_s, 2),
        "status": "interrupted" if run.interrupted else
        ("failed" if run.failure else "complete")}
    if run.failure:
        summary["error"] = str(run.failure)
    final = run.rundir.finalize(summary)
    reports = render_run(final, run.rundir.path)
    run.summary = {**final, "report": str(reports.get("html", ""))}
    return run.summary


def outcome(run: Run) -> dict[str, Any]:
    """The summary, or the run's failure / interruption raised for the caller."""
    if run.failure:
        raise run.failure
    if run.interrupted:
        raise KeyboardInterrupt
    return run.summary


def start(provider: Provider, scenario: Scenario, cni: Cni, backend: str,
          opts: RunOptions, out: Path, trials: int = 1,
          meta: dict[str, Any] | None = None) -> Run:
    """Open the run directory and its row in the results database (`meta`: extra keys to
    record, e.g. the nightly id)."""
    store = Store(opts.db) if opts.db else Store()
    rundir = RunDir.create(out, cni.name, backend, store=store, meta={
        "scenario": scenario.name, "seed": scenario.load.seed, "users": scenario.load.users,
        "spawn_rate": scenario.load.spawn_rate, "duration_per_path_s": scenario.load.duration_s,
        "paths_under_test": list(scenario.load.paths), "build": scenario.cni.build,
        "datapath": cni.datapaths.get(backend, ""), "cni_mtu": scenario.cni.mtu,
        **(meta or {})})
    name = f"run-{rundir.run_id[-6:]}"
    return Run(provider, scenario, cni, backend, opts, out, name=name, rundir=rundir,
               trials=trials)

