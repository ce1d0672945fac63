"""A lifecycle is a flat list of named steps; any failure runs one rollback (kind's create)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from testbed import console
from testbed.errors import StepError, TestbedError

Ctx = TypeVar("Ctx")


@dataclass(frozen=True)
class Step(Generic[Ctx]):
    """One named step with a single `execute(ctx)`."""

    title: str
    execute: Callable[[Ctx], None]


def run(steps: list[Step[Ctx]], ctx: Ctx, rollback: Callable[[], None],
        retain: bool = False) -> None:
    """Run steps in order; on any failure or Ctrl-C, roll back unless `retain`, then re-raise."""
    current = ""
    try:
        for s in steps:
            current = s.title
            with console.step(s.title):
                s.execute(ctx)
    except BaseException as e:
        if retain:
            console.info(" ! --retain given: leaving what was created for inspection")
        else:
            with console.step("Rolling back"):
                rollback()
        if isinstance(e, TestbedError) or not isinstance(e, Exception):
            raise
        raise StepError(f"{current}: {e.__class__.__name__}: {e}") from e
