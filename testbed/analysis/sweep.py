"""Load sweeps: which offered rates to try, and the knee, the highest that holds the objective."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 13))  # 10% .. 120% of ceiling
DEFAULT_P99_MS = 10.0
HELD = 0.95  # a rate is held when at least this share of the offered rate was achieved


def plan(ceiling_rps: float, fractions: Sequence[float] = DEFAULT_FRACTIONS,
         minimum: float = 1.0) -> list[float]:
    """Offered rates, ascending and distinct, as fractions of a measured ceiling."""
    if ceiling_rps <= 0:
        raise ValueError(f"the ceiling must be positive, not {ceiling_rps}")
    if not fractions or any(f <= 0 for f in fractions):
        raise ValueError(f"sweep fractions must be positive: {list(fractions)}")
    rates = sorted({max(minimum, round(ceiling_rps * f)) for f in fractions})
    return [float(r) for r in rates]


@dataclass(frozen=True)
class Point:
    """One step of a sweep: what was offered, what was achieved, and the p99."""

    offered_rps: float
    achieved_rps: float
    p99_ms: float
    generator_bound: bool = False


def knee(points: Sequence[Point], p99_ms: float = DEFAULT_P99_MS) -> Point | None:
    """The highest offered rate held (achieved within 5%) with p99 under the objective, below
    the first rate that failed; generator-bound points are never ranked."""
    best = None
    for p in sorted(points, key=lambda p: p.offered_rps):
        if p.generator_bound:
            continue
        if p.achieved_rps < HELD * p.offered_rps or p.p99_ms > p99_ms:
            break
        best = p
    return best
