"""One night: every matrix entry and trial as a run under one nightly id; a failure goes on."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testbed import cni as cnis
from testbed import console
from testbed.nightly.matrix import Entry, Matrix, entries
from testbed.provider.base import Provider
from testbed.results import Store, new_run_id
from testbed.results.summary import utc_now
from testbed.run import options
from testbed.scenario import Scenario


def new_nightly_id(when: datetime | None = None) -> str:
    """`night-20261203T020000Z-1a2b3c`: sortable by time, unique."""
    stamp = (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"night-{stamp}-{secrets.token_hex(3)}"


@dataclass
class Planned:
    """One run of the night, validated before anything starts."""

    entry: Entry
    trial: int
    opts: options.RunOptions
    spec: Scenario
    module: cnis.Cni
    backend: str
    out: Path


@dataclass
class Outcome:
    """What one planned run became."""

    entry: Entry
    trial: int
    run_id: str
    status: str
    seconds: float
    error: str = ""


@dataclass
class NightResult:
    """The night as it ran (the store holds the runs themselves)."""

    nightly_id: str
    started_at: str
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0


def plan(matrix: Matrix, out: Path, db: str | None) -> list[Planned]:
    """Every run of the matrix, each resolved like `run` would (scenario, overrides, paths):
    a bad entry is refused here, in one line, before any cluster exists."""
    out_runs = out / "runs"
    planned = []
    for entry in entries(matrix):
        for trial in range(matrix.trials):
            seed = None if matrix.seed is None else matrix.seed + trial
            opts = options.RunOptions(entry.cni, entry.scenario, matrix.duration_s,
                                      matrix.users, None, seed, out=str(out_runs), db=db)
            spec, module, backend, run_out = options.resolve(opts)
            planned.append(Planned(entry, trial, opts, spec, module, backend, run_out))
    return planned


def run_night(provider: Provider, planned: list[Planned], nightly_id: str,
              prefix: str) -> NightResult:
    """Run every planned run in turn; a failed run is stored as failed and the night goes
    on; Ctrl-C stops the night after that run's teardown (what was stored stays)."""
    from testbed.run import pipeline

    night = NightResult(nightly_id, utc_now())
    start = time.monotonic()
    for i, p in enumerate(planned, 1):
        console.info(f"== night {nightly_id}: {i}/{len(planned)} {p.entry.label} "
                     f"trial {p.trial + 1}")
        began = time.monotonic()
        meta = {"nightly_id": nightly_id, "nightly_entry": p.entry.label,
                "nightly_trial": p.trial}
        run_id, status, error = "", "complete", ""
        try:
            run = pipeline.start(provider, p.spec, p.module, p.backend, p.opts, p.out,
                                 meta=meta)
            run.name = f"{prefix}-{i}"
            run_id = run.rundir.run_id if run.rundir else ""
            pipeline.execute(run)
        except KeyboardInterrupt:
            night.interrupted = True
            status = "interrupted"
        except Exception as e:  # the night goes on; the run is stored as failed
            status, error = "failed", " ".join(str(e).split()) or type(e).__name__
            if not run_id:
                run_id = _store_unstarted(p, meta, error)
            console.fail(f"{p.entry.label}: {error}")
        night.outcomes.append(Outcome(p.entry, p.trial, run_id, status,
                                      round(time.monotonic() - began, 1), error))
        if night.interrupted:
            console.info(" ! interrupted: the night stops; every stored run is kept")
            break
    night.seconds = round(time.monotonic() - start, 1)
    return night


def _store_unstarted(p: Planned, meta: dict[str, Any], error: str) -> str:
    """A run that failed before its run directory existed is still stored, as failed."""
    run_id = new_run_id(p.module.name, p.backend)
    store = Store(p.opts.db) if p.opts.db else Store()
    store.add({"run_id": run_id, "cni": p.module.name, "backend": p.backend,
               "scenario": p.spec.name, "status": "failed", "error": error,
               "started_at": utc_now(), **meta})
    return run_id
