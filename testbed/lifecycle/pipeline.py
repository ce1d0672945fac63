"""The one step runner: a flat list of named steps, each shown while it runs (kind's create)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from testbed import console
from testbed.errors import StepError, TestbedError

Ctx = TypeVar("Ctx")


@dataclass(frozen=True)
class Step(Generic[Ctx]):
    """One named step with a single `execute(ctx)`; a `quiet` one shows its own sub-steps."""

    title: str
    execute: Callable[[Ctx], None]
    quiet: bool = False


def run(steps: list[Step[Ctx]], ctx: Ctx,
        timings: list[tuple[str, float]] | None = None) -> None:
    """Run steps in order; an unexpected error becomes a StepError naming the step.

    With `timings`, each finished step appends (title, wall seconds) to it (the profile of
    `up`). Cleaning up after a failure or Ctrl-C is the caller's (the cluster handle's rollback).
    """
    current = ""
    try:
        for s in steps:
            current = s.title
            start = time.monotonic()
            if s.quiet:
                s.execute(ctx)
            else:
                with console.step(s.title):
                    s.execute(ctx)
            if timings is not None:
                timings.append((s.title, time.monotonic() - start))
    except TestbedError:
        raise
    except Exception as e:
        raise StepError(f"{current}: {e.__class__.__name__}: {e}") from e
