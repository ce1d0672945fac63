"""The verdict table: per metric, which CNI wins, by how much, whether it is real, and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testbed.analysis import stats
from testbed.analysis.metrics import Metric, flatten
from testbed.analysis.stats import Figure


@dataclass(frozen=True)
class VerdictRow:
    """One metric across the compared CNIs."""

    metric: str
    unit: str
    better: str
    figures: dict[str, Figure]  # label -> median and 95% interval over the trials
    winner: str | None  # None: no difference, not ranked, or one CNI measured it
    runner_up: str | None
    margin: float | None  # winner over runner-up, relative
    significant: bool
    p_value: float | None
    test: str
    reason: str  # the statistics in one line
    why: str  # the winner's datapath in one line ("routed, no encapsulation", ...)
    ranked: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each figure as median, low, high, n and the trial values."""
        return {"metric": self.metric, "unit": self.unit, "better": self.better,
                "figures": {k: {"median": f.median, "low": f.low, "high": f.high, "n": f.n,
                                "samples": list(f.samples)} for k, f in self.figures.items()},
                "winner": self.winner, "runner_up": self.runner_up, "margin": self.margin,
                "significant": self.significant, "p_value": self.p_value, "test": self.test,
                "reason": self.reason, "why": self.why, "ranked": self.ranked}


def _unranked(bound: bool) -> str:
    if bound:
        return "not ranked: generator-bound in a trial (the load generator saturated)"
    return "not ranked: a floor with no CNI on the path (the same-run reference)"


def row(key: str, by_label: Mapping[str, Metric], datapaths: Mapping[str, str]) -> VerdictRow:
    """The verdict for one metric: best median against the runner-up, by stats.compare."""
    first = next(iter(by_label.values()))
    figures = {label: stats.figure(m.values) for label, m in by_label.items()}
    ranked = all(m.ranked for m in by_label.values())
    winner = runner_up = margin = p_value = None
    significant, why = False, ""
    if not ranked:
        reason = _unranked(any(m.generator_bound for m in by_label.values()))
    elif len(figures) < 2:
        reason = "measured by one CNI only"
    else:
        order = sorted(figures, key=lambda k: figures[k].median,
                       reverse=first.better == "higher")
        best, second = order[0], order[1]
        v = stats.compare(best, figures[best], second, figures[second], first.better)
        winner, margin, significant, p_value, reason = (v.winner, v.margin, v.significant,
                                                        v.p_value, v.reason)
        if winner:
            runner_up, why = second, datapaths.get(winner, "")
        else:
            reason = _tie(order, figures, first.better, reason)
    return VerdictRow(key, first.unit, first.better, figures, winner, runner_up, margin,
                      significant, p_value, stats.TEST, reason, why, ranked)


def _tie(order: list[str], figures: Mapping[str, Figure], better: stats.Better,
         reason: str) -> str:
    """With three or more CNIs and no winner: which lead together, and which are behind them
    outside the noise (worse than every leader by the same test)."""
    leaders = [order[0]]
    for other in order[1:]:
        v = stats.compare(order[0], figures[order[0]], other, figures[other], better)
        if not v.significant:
            leaders.append(other)
    behind = [o for o in order if o not in leaders and all(
        stats.compare(lead, figures[lead], o, figures[o], better).significant
        for lead in leaders)]
    if len(order) < 3 or not behind:
        return reason
    return (f"no difference between {' and '.join(leaders)}; {', '.join(behind)} "
            "behind them, outside the noise")


def table(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[VerdictRow]:
    """Every metric at least one run holds, ranked metrics first, in flatten's order.

    `runs` are (label, summary) pairs; a summary's `datapath` is the one-line `why`."""
    flat = [(label, flatten(s)) for label, s in runs]
    datapaths = {label: str(s.get("datapath") or "") for label, s in runs}
    keys = list(dict.fromkeys(k for _, metrics in flat for k in metrics))
    rows = [row(k, {label: m[k] for label, m in flat if k in m}, datapaths) for k in keys]
    return [r for r in rows if r.ranked] + [r for r in rows if not r.ranked]
