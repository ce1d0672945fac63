"""`compare`: every CNI's cluster up at once, the trials interleaved with the CNI order rotated,
so drift on a shared machine spreads over all CNIs instead of reading as one CNI's effect."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from testbed import console
from testbed.cluster.handle import Cluster
from testbed.run import pipeline
from testbed.run.pipeline import Run


def rotation(items: list[Any], trial: int) -> list[Any]:
    """Trial 1 keeps the order, trial 2 starts at the second item, and so on."""
    if not items:
        return []
    k = (trial - 1) % len(items)
    return items[k:] + items[:k]


def execute_many(runs: list[Run], trials: int) -> list[dict[str, Any]]:
    """Up every run's cluster, run `trials` rotated rounds of the trial steps, finalize each run
    (a failed one is recorded as failed and the others go on) and tear every cluster down."""
    order: list[list[str]] = []
    with ExitStack() as stack:
        try:
            for run in runs:
                run.trials = trials
                run.handle = stack.enter_context(Cluster(run.provider, run.name,
                                                         keep=run.opts.keep))
                console.info(f"== {run.cni.name}:{run.backend}: bringing its cluster up")
                pipeline.attempt(run, pipeline.SETUP)
            for t in range(1, trials + 1):
                live = rotation([r for r in runs if r.failure is None], t)
                if not live:
                    break
                order.append([r.rundir.run_id for r in live if r.rundir is not None])
                console.info(f"== trial {t}/{trials}: "
                             + ", ".join(f"{r.cni.name}:{r.backend}" for r in live))
                for run in live:
                    run.record("trials", {"n": trials, "order": order})
                    pipeline.trial(run, t)
        finally:
            for run in runs:
                if run.summary:
                    continue
                if any(r.interrupted for r in runs):
                    run.interrupted = True
                pipeline.finish(run)
    if any(r.interrupted for r in runs):
        raise KeyboardInterrupt
    return [r.summary for r in runs]
