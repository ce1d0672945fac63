"""Play a scenario's fault timeline beside one Locust phase, and measure each fault."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testbed import console
from testbed.cluster import model
from testbed.errors import TestbedError
from testbed.faults import control, newpod, runner
from testbed.faults.facts import Facts
from testbed.faults.metrics import error_kinds, recovery
from testbed.faults.timeline import FaultEvent
from testbed.load.locust import ERRORS_FILE, LocustPhase, PhaseResult
from testbed.provider.base import Provider
from testbed.scenario import Scenario

NODE_KINDS = ("node-stop", "node-kill", "node-restart")
CONTROL_WAIT_S = 30.0
SPAWN_WAIT_S = 60.0
# Locust's master log lines once every user runs (the second when a busy worker's report is
# late).
SPAWNED = ("All users spawned", "Spawning is complete")


class Player:
    """A thread that injects each event at its time, holds and undoes it, then times the
    control plane's recovery; `finish` undoes whatever is still in effect."""

    def __init__(self, provider: Provider, cluster: str, events: list[FaultEvent],
                 count: int, path: str, phase: LocustPhase | None = None) -> None:
        self.provider, self.cluster, self.path = provider, cluster, path
        self.phase = phase
        self.spawned = self._spawns()  # the master's log before this phase's master starts
        self.events = sorted(events, key=lambda e: e.at)
        self.count = count
        self.results: list[dict[str, Any]] = []
        self.hit_nodes: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"faults-{path}", daemon=True)
        self.t0 = 0.0

    def start(self) -> Player:
        """Begin the timeline now (the phase's start)."""
        self.t0 = time.time()
        self._thread.start()
        return self

    def _spawns(self) -> int:
        """How many times the phase's master log says every user is running."""
        if self.phase is None:
            return 0
        try:
            log = self.provider.read_file(self.phase.master.container,
                                          f"{self.phase.workdir}/master.log")
        except TestbedError:
            return 0
        return sum(log.count(line) for line in SPAWNED)

    def _wait_users(self) -> None:
        """`at` counts from the moment every user runs (Locust's master takes a few seconds
        to start): the timeline's clock starts then, or after SPAWN_WAIT_S at the latest."""
        deadline = time.monotonic() + SPAWN_WAIT_S
        while self.phase is not None and time.monotonic() < deadline:
            if self._spawns() > self.spawned or self._stop.wait(0.25):
                break
        self.t0 = time.time()

    def _run(self) -> None:
        try:
            facts = Facts.find(self.provider, self.cluster)
        except TestbedError as e:
            self.results.append({"error": str(e)})
            return
        self._wait_users()
        for ev in self.events:
            if ev.kind == "partition":
                facts.warm()  # before its time: the partition then takes a few execs
            if self._stop.wait(max(0.0, self.t0 + ev.at - time.time())):
                self.results.append({"fault": ev.fault(self.cluster, self.count).label,
                                     "skipped": "the load phase ended first"})
                continue
            self.results.append(self._play(facts, ev))

    def _play(self, facts: Facts, ev: FaultEvent) -> dict[str, Any]:
        fault = ev.fault(self.cluster, self.count)
        if fault.kind in NODE_KINDS:
            self.hit_nodes.update(model.node_name(self.cluster, i) for i in fault.nodes)
        console.info(f"   ! fault: {fault.label} at {ev.at:g}s"
                     + (f" for {ev.for_s:g}s" if ev.for_s else ""))
        try:
            active = runner.inject(self.provider, self.cluster, fault, facts)
        except TestbedError as e:
            return {"fault": fault.label, "kind": fault.kind, "error": str(e)}
        # a pod created while the fault holds: does it get an address before the fault ends?
        probe = newpod.Probe(self.provider, self.cluster, fault).start() if ev.for_s else None
        new_pod = None
        try:
            if ev.for_s:  # held from the moment it took effect
                self._stop.wait(max(0.0, active.applied + ev.for_s - time.time()))
            new_pod = probe.outcome() if probe else None
        finally:
            runner.release(self.provider, self.cluster, active, facts)
        doc = {**active.timings(), "at_s": ev.at, "applied": round(active.applied, 3),
               "undone": round(active.undone, 3)}
        if new_pod is not None:
            doc["new_pod"] = new_pod
        doc["control_plane_s"] = control.recovered(self.provider, self.cluster, fault,
                                                   active.undone, CONTROL_WAIT_S)
        return doc

    def finish(self) -> list[dict[str, Any]]:
        """Stop the timeline: an active fault is undone now; wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.results

    def hit(self, phase: LocustPhase) -> list[str]:
        """The generator's nodes (master, workers) a node fault took down."""
        used = {phase.master.container, *(w.container for w in phase.workers)}
        return sorted(used & self.hit_nodes)


def start(provider: Provider, cluster: str, scenario: Scenario, path: str,
          phase: LocustPhase | None = None) -> Player | None:
    """The scenario's timeline, its clock starting once the phase's users all run (at once
    without a phase), or None without one."""
    if not scenario.faults:
        return None
    return Player(provider, cluster, scenario.faults, scenario.nodes, path, phase).start()


@contextmanager
def finishing(player: Player | None) -> Iterator[None]:
    """Whatever happens in the block (Ctrl-C, a failure), the timeline's faults are undone."""
    try:
        yield
    finally:
        if player is not None:
            player.finish()


def run_phase(phase: LocustPhase, out: Path, player: Player | None
              ) -> tuple[PhaseResult, str]:
    """Run the phase; if a node fault took down a node of its generator, what Locust wrote
    so far is still collected (a stopped node's files can be copied) and marked partial."""
    try:
        result = phase.run(out)
    except TestbedError as e:
        if player is None or not player.hit(phase):
            raise
        console.info(f"   ! {phase.path}: the load generator was hit ({e}); keeping what "
                     "was measured, marked partial")
        return phase.collect(out), f"generator hit: {', '.join(player.hit(phase))}: {e}"
    hit = player.hit(phase) if player is not None else []
    return result, (f"generator hit: {', '.join(hit)}" if hit else "")


def measure(player: Player, result: PhaseResult) -> list[dict[str, Any]]:
    """Each played fault with its recovery figures from the phase's timeseries, and its error
    kinds unless the phase's failures have no per-second kinds (only Locust's failures CSV)."""
    known = result.errors_from == ERRORS_FILE or not result.failures
    return with_recovery(player.finish(), result.timeseries, result.errors if known else None)


def with_recovery(played: list[dict[str, Any]], timeseries: list[dict[str, Any]],
                  errors: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each fault's recovery figures, and with `errors` (rows {t, kind, count}) its failed
    requests by kind (`error_kinds`), looked for until the next fault began."""
    starts = sorted(float(d["applied"]) for d in played if "applied" in d)
    out = []
    for doc in played:
        if "applied" in doc:
            later = [t for t in starts if t > float(doc["applied"])]
            horizon = later[0] if later else None
            doc = {**doc, **recovery(timeseries, doc["applied"], doc["end"], horizon)}
            if errors is not None:
                doc["error_kinds"] = error_kinds(errors, float(doc["applied"]), horizon)
        out.append(doc)
    return out
