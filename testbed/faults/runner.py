"""Inject a fault, hold it, undo it (at its end, on Ctrl-C, on any failure), or clear leftovers."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import StepError, TestbedError
from testbed.faults import state
from testbed.faults.actions import APPLY, Undo, undo_all
from testbed.faults.facts import Facts
from testbed.faults.spec import Fault
from testbed.lifecycle import interrupts
from testbed.provider.base import Provider


@dataclass
class Active:
    """A fault in effect: when it began (Unix time) and its undo records."""

    id: str
    fault: Fault
    start: float
    applied: float = 0.0  # when its effect was in place
    end: float = 0.0  # when its undo began
    undone: float = 0.0  # when its undo finished
    undo: list[Undo] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def timings(self) -> dict[str, Any]:
        """The fault's window and how long applying and undoing took, s."""
        return {"fault": self.fault.label, "kind": self.fault.kind,
                "start": round(self.start, 3), "end": round(self.end, 3),
                "apply_s": round(self.applied - self.start, 3),
                "undo_s": round(self.undone - self.end, 3) if self.undone else None,
                **({"errors": self.errors} if self.errors else {})}


def inject(provider: Provider, cluster: str, fault: Fault, facts: Facts | None = None
           ) -> Active:
    """Apply a fault; its undo records are on disk before its effect, so a failure half way
    (or a killed process, through `fault NAME clear`) can still undo it."""
    facts = facts or Facts.find(provider, cluster)
    active = Active(id=state.new_id(), fault=fault, start=time.time())

    def save(undo: list[Undo]) -> None:
        active.undo = undo
        state.put(cluster, {"id": active.id, "fault": fault.label, "start": active.start,
                            "undo": undo})

    try:
        APPLY[fault.kind](facts, fault, active.id, save)
    except BaseException:
        release(provider, cluster, active, facts)
        raise
    active.applied = time.time()
    return active


def release(provider: Provider, cluster: str, active: Active, facts: Facts | None = None
            ) -> Active:
    """Undo a fault (Ctrl-C waits until that is done); its record goes once undone."""
    active.end = active.end or time.time()
    # Signals reach the main thread only; a timeline's thread leaves the handler alone.
    main = threading.current_thread() is threading.main_thread()
    with interrupts.shield(cluster) if main else contextlib.nullcontext():
        facts = facts or Facts.find(provider, cluster)
        active.errors = undo_all(facts, active.undo)
        active.undone = time.time()
        if not active.errors:
            state.drop(cluster, active.id)
    return active


def hold(provider: Provider, cluster: str, fault: Fault) -> Active:
    """Inject, keep it for `fault.for_s` (or just the action, for single-action kinds), undo."""
    active = inject(provider, cluster, fault)
    try:
        if fault.for_s:
            time.sleep(max(0.0, active.applied + fault.for_s - time.time()))
    finally:
        release(provider, cluster, active)
    if active.errors:
        raise StepError(f"{fault.label}: undo failed: {active.errors[0]}; retry "
                        f"`python -m testbed fault {cluster} clear`")
    return active


def clear(provider: Provider, cluster: str) -> list[str]:
    """Undo every fault recorded for a cluster (left by a killed process); their labels."""
    records = state.load(cluster)
    if not records:
        return []
    if cluster not in provider.clusters():  # removed by `down`: nothing left to undo
        state.forget(cluster)
        return [str(r.get("fault")) for r in records]
    facts = Facts.find(provider, cluster)
    failed = []
    with interrupts.shield(cluster):
        for record in reversed(records):
            errors = undo_all(facts, list(record.get("undo") or []))
            if errors:
                failed.append(f"{record.get('fault')}: {errors[0]}")
            else:
                state.drop(cluster, str(record["id"]))
    if failed:
        raise StepError(f"cannot undo {failed[0]}; retry `python -m testbed fault {cluster} "
                        "clear`")
    return [str(r.get("fault")) for r in records]


def active(cluster: str) -> list[dict[str, Any]]:
    """The faults recorded as active on a cluster."""
    return state.load(cluster)


__all__ = ["Active", "TestbedError", "clear", "hold", "inject", "release"]
