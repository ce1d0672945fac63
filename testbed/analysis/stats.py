"""Medians with 95% intervals over trials, and whether two CNIs really differ (Welch's t-test)."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Figure:
    """One metric over N trials: the median, and the 95% Student-t interval of the mean
    (the trials' noise band; a single trial has none)."""

    median: float
    low: float
    high: float
    n: int
    samples: tuple[float, ...]

    @property
    def has_interval(self) -> bool:
        """Whether there were enough trials (2+) for an interval."""
        return self.n >= 2


def figure(samples: Sequence[float]) -> Figure:
    """The median of the trials with the interval; NaN-free input required."""
    values = tuple(float(v) for v in samples)
    if not values:
        raise ValueError("no trials to summarise")
    if any(math.isnan(v) or math.isinf(v) for v in values):
        raise ValueError(f"a trial is not a finite number: {values}")
    med = statistics.median(values)
    if len(values) < 2:
        return Figure(med, med, med, 1, values)
    mean = statistics.fmean(values)
    sem = statistics.stdev(values) / math.sqrt(len(values))
    half = float(sps.t.ppf(1 - ALPHA / 2, len(values) - 1)) * sem
    return Figure(med, mean - half, mean + half, len(values), values)


@dataclass(frozen=True)
class Verdict:
    """Which of two CNIs wins one metric, by how much, and whether it is real."""

    winner: str | None  # None: no difference
    margin: float  # relative, winner over loser (0.12 = 12% better)
    significant: bool
    p_value: float | None
    test: str
    reason: str


TEST = "Welch's t-test (two-sided, 95%) and disjoint 95% intervals"


def compare(a_name: str, a: Figure, b_name: str, b: Figure, better: Better) -> Verdict:
    """A difference is real only when Welch's test rejects equal means at 95% and the two
    intervals do not overlap (outside both runs' noise); otherwise "no difference"."""
    sign = 1.0 if better == "higher" else -1.0
    a_wins = sign * (a.median - b.median) >= 0
    best = a_name if a_wins else b_name
    fb, fw = (a, b) if a_wins else (b, a)
    margin = abs(fb.median - fw.median) / abs(fw.median) if fw.median else math.inf
    if not (a.has_interval and b.has_interval):
        return Verdict(None, margin, False, None, TEST,
                       "one trial each: no noise estimate, so no verdict (use --trials 2+)")
    if statistics.pstdev(a.samples) == 0 and statistics.pstdev(b.samples) == 0:
        p = 0.0 if a.median != b.median else 1.0
    else:
        with warnings.catch_warnings():  # near-identical trials: scipy warns, p stays valid
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(sps.ttest_ind(a.samples, b.samples, equal_var=False).pvalue)
    disjoint = a.high < b.low or b.high < a.low
    if p < ALPHA and disjoint:
        return Verdict(best, margin, True, p, TEST,
                       f"{best} {margin:.0%} better, outside both runs' noise (p={p:.3g})")
    why = "intervals overlap" if not disjoint else f"p={p:.3g} >= {ALPHA:.2f}"
    return Verdict(None, margin, False, p, TEST, f"no difference: {why}")
