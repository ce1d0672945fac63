"""Load sweeps: which offered rates to try, and the knee, the highest that holds the objective."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 13))  # 10% .. 120% of ceiling
DEFAULT_P99_MS = 10.0
TOP_FRACTION = 1.2  # `steps` spread evenly up to 120% of the ceiling
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


def fractions(steps: int, top: float = TOP_FRACTION) -> tuple[float, ...]:
    """`steps` fractions of the ceiling evenly spaced up to `top` (12 steps: 10% .. 120%)."""
    if steps < 1 or top <= 0:
        raise ValueError(f"a sweep needs at least one step up to a positive top: {steps}, {top}")
    return tuple(round(top * i / steps, 4) for i in range(1, steps + 1))


@dataclass(frozen=True)
class Point:
    """One step of a sweep: what was offered, what was achieved, and the p99 (and, from an
    open-loop generator, the other percentiles, errors and the generator's own CPU)."""

    offered_rps: float
    achieved_rps: float
    p99_ms: float
    generator_bound: bool = False
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p999_ms: float = 0.0
    sent_rps: float = 0.0  # what the generator actually sent (its pacer may fall behind)
    requests: int = 0
    error_share: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    generator_cpu_max: float = 0.0
    generator_cpu_mean: float = 0.0

    def summary(self) -> dict[str, Any]:
        """A plain row for JSON and the tables."""
        return asdict(self)

    @property
    def held(self) -> bool:
        """Whether the achieved rate is within 5% of the offered one."""
        return self.achieved_rps >= HELD * self.offered_rps


def knee(points: Sequence[Point], p99_ms: float = DEFAULT_P99_MS) -> Point | None:
    """The highest offered rate held (achieved within 5%) with p99 under the objective, below
    the first rate that failed; generator-bound points are never ranked."""
    best = None
    for p in sorted(points, key=lambda p: p.offered_rps):
        if p.generator_bound:
            continue
        if not p.held or p.p99_ms > p99_ms:
            break
        best = p
    return best

