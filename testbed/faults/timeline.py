"""A scenario's fault timeline: `faults: [{at: 20s, kind: partition, nodes: [3], for: 15s}]`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from testbed.errors import UserError
from testbed.faults import spec


class FaultEvent(BaseModel):
    """One fault of a timeline, `at` seconds after a load phase starts, held `for` seconds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: float = Field(description="when, after the load phase starts: 20, 20s, 500ms, 1m")
    kind: str = Field(description=f"one of {', '.join(spec.KINDS)}")
    nodes: list[int] = Field(default_factory=list, description="the target node(s); side A "
                                                               "of a partition")
    other: list[int] = Field(default_factory=list, description="side B of a partition "
                                                               "(default: every other node)")
    for_s: float | None = Field(default=None, alias="for", description="how long it is held")
    rate: str = Field(default="", description="for `rate`: a tc rate, e.g. 10mbit")

    @field_validator("at", "for_s", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        if v is None:
            return None
        try:
            return spec.parse_duration(v if isinstance(v, (str, int, float)) else str(v),
                                       "duration")
        except UserError as e:
            raise ValueError(str(e)) from None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        try:
            return spec.check_kind(v)
        except UserError as e:
            raise ValueError(str(e)) from None

    def target(self) -> str:
        """The CLI's TARGET for this event."""
        if self.kind == "etcd-stop":
            return "etcd"
        if self.kind == "cni-restart-all":
            return "all"
        side = ",".join(map(str, self.nodes))
        if self.kind == "partition" and self.other:
            return f"{side}:{','.join(map(str, self.other))}"
        return side

    def fault(self, cluster: str, count: int) -> spec.Fault:
        """The validated fault on a cluster of `count` nodes."""
        return spec.build(self.kind, self.target(), cluster, count, self.for_s, self.rate)


def check(events: list[FaultEvent], nodes: int, duration_s: float) -> None:
    """Every event fits the scenario: its nodes exist, it starts within the load phase;
    raises ValueError (the scenario loader names the file and the field)."""
    for i, ev in enumerate(events):
        where = f"faults[{i}] ({ev.kind})"
        if ev.kind not in ("etcd-stop", "cni-restart-all") and not ev.nodes:
            raise ValueError(f"{where}: nodes is missing; allowed: node numbers 1 to {nodes}")
        try:
            ev.fault("scenario", nodes)
        except UserError as e:
            raise ValueError(f"{where}: {e}") from None
        if ev.at >= duration_s:
            raise ValueError(f"{where}: at {ev.at:g}s is not within the load phase "
                             f"(load.duration_s {duration_s:g}); allowed: 0 to {duration_s:g}s")
