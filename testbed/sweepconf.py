"""A scenario's `sweep:` block: the open-loop load sweep `run` takes after Locust's load."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from testbed.analysis.sweep import DEFAULT_P99_MS, fractions

DEFAULT_STEPS = 6  # 20% .. 120% of the ceiling: with 2 s steps about 15 s of load per path


class SweepProfile(BaseModel):
    """Offered rates as `fractions` of each path's measured ceiling (or `steps` evenly up to
    120%), seconds per step and for the ceiling, and the p99 objective the knee must hold."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    fractions: list[float] | None = Field(default=None, min_length=1, max_length=50)
    steps: int | None = Field(default=None, ge=1, le=50)
    step_s: float = Field(default=2.0, ge=1, le=600)
    ceiling_s: float = Field(default=2.0, ge=1, le=60)
    p99_ms: float = Field(default=DEFAULT_P99_MS, gt=0, le=60000)

    @field_validator("fractions")
    @classmethod
    def _ascending(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (any(not 0 < f <= 3 for f in v) or sorted(set(v)) != v):
            raise ValueError(f"{v} does not rise within (0, 3]; allowed: "
                             "ascending distinct fractions of the ceiling, e.g. [0.25, 0.5, 1.0]")
        return v

    @model_validator(mode="after")
    def _one_way(self) -> SweepProfile:
        if self.fractions is not None and self.steps is not None:
            raise ValueError("fractions and steps are both given; allowed: one of them")
        return self

    def plan_fractions(self) -> tuple[float, ...]:
        """The fractions of the ceiling to offer, ascending."""
        if self.fractions is not None:
            return tuple(self.fractions)
        return fractions(self.steps or DEFAULT_STEPS)
