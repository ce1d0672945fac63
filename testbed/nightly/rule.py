"""The regression rule: the last night against the noise its own history shows."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826  # MAD x this estimates a normal sigma
MEDIAN_EFFICIENCY = 1.2533  # the sd of a median of n normal values is about this x sigma/sqrt(n)
# A change smaller than this, in the metric's unit, is never a regression (shares of failed
# requests are often exactly 0 night after night, so their spread is 0).
MIN_ABSOLUTE = {"share": 0.01, "%": 1.0}


@dataclass(frozen=True)
class Rule:
    """How the nightly report flags a regression (RULE_TEXT says it in words)."""

    baseline_nights: int = 7  # the window the last night is compared with
    min_baseline: int = 5  # fewer nights with the metric in it: no verdict
    history_nights: int = 30  # the window the noise is measured on (and the trend plotted)
    k: float = 4.0  # noise multiples a change must exceed
    small_n: float = 10.0  # the band widens by (1 + small_n / n) on short histories
    min_relative: float = 0.05  # and must be at least this share of the baseline median
    drift_relative: float = 0.10  # a drift must be at least this share of the old median

    def text(self) -> str:
        """The rule in words, for the report and the README."""
        return (f"A metric regresses when its last night is worse (in its `better` direction) "
                f"than the median of the previous {self.baseline_nights} nights by more than "
                f"max({self.k:g} x sigma x (1 + {self.small_n:g}/n), "
                f"{self.min_relative:.0%} of that median, a unit floor: 0.01 for shares, "
                f"1 point for %), where sigma = {MAD_TO_SIGMA} x MAD of the night-to-night "
                f"differences / sqrt(2) over the up to {self.history_nights - 1} earlier nights "
                f"(n of them; differences make it robust to past steps and slow drifts). It "
                f"needs at least {self.min_baseline} earlier nights with the metric; with fewer "
                f"there is no verdict. A drift regresses when the median of the last "
                f"{self.baseline_nights} nights is worse than the median of the oldest "
                f"{self.baseline_nights} of the last {self.history_nights} (needing "
                f"{3 * self.baseline_nights} nights) by more than max({self.k:g} x sigma x "
                f"{MEDIAN_EFFICIENCY} x sqrt(2/{self.baseline_nights}) x (1 + "
                f"{self.small_n:g}/n), {self.drift_relative:.0%} of the old median). "
                "Generator-bound figures and floors without a CNI on the path are not judged.")


RULE = Rule()


@dataclass(frozen=True)
class Verdict:
    """What the rule says about one series' metric on the last night."""

    status: str  # regression, drift, improved, ok, insufficient, missing
    last: float | None
    baseline: float | None  # median of the baseline window
    change: float | None  # relative, signed: (last - baseline) / |baseline|
    threshold: float | None  # the band's half-width, in the metric's unit
    sigma: float | None
    n_baseline: int
    reason: str

    @property
    def flagged(self) -> bool:
        """A regression of either kind (the nightly exits 1)."""
        return self.status in ("regression", "drift")


def sigma(history: Sequence[float]) -> float:
    """Robust per-night noise: MAD of the night-to-night differences, as a normal sigma."""
    if len(history) < 2:
        return 0.0
    diffs = [b - a for a, b in itertools.pairwise(history)]
    mid = statistics.median(diffs)
    return MAD_TO_SIGMA * statistics.median(abs(d - mid) for d in diffs) / math.sqrt(2)


def _relative(value: float, ref: float) -> float | None:
    return None if ref == 0 else (value - ref) / abs(ref)


def judge(values: Sequence[float | None], better: str, unit: str = "",
          rule: Rule = RULE) -> Verdict:
    """`values`: one per night, oldest first, the last night last (None: no figure that night)."""
    window = list(values)[-rule.history_nights:]
    if not window or window[-1] is None:
        return Verdict("missing", None, None, None, None, None, 0,
                       "no figure on the last night (the run failed or did not measure it)")
    last = float(window[-1])
    earlier = [float(v) for v in window[:-1] if v is not None]
    base = earlier[-rule.baseline_nights:]
    if len(base) < rule.min_baseline:
        return Verdict("insufficient", last, statistics.median(base) if base else None, None,
                       None, None, len(base), f"{len(base)} earlier nights; the rule needs "
                       f"{rule.min_baseline}")
    center = statistics.median(base)
    noise = sigma(earlier)
    widen = 1 + rule.small_n / len(earlier)
    floor = MIN_ABSOLUTE.get(unit, 0.0)
    threshold = max(rule.k * noise * widen, rule.min_relative * abs(center), floor)
    sign = 1.0 if better == "lower" else -1.0
    worse = sign * (last - center)
    change = _relative(last, center)
    if worse > threshold:
        return Verdict("regression", last, center, change, threshold, noise, len(base),
                       f"worse than the baseline median by {abs(last - center):.4g} {unit}, "
                       f"outside the band of {threshold:.4g}")
    drift = _drift(window, earlier, noise, widen, sign, rule)
    if drift is not None:
        old, band = drift
        return Verdict("drift", last, center, _relative(last, old), band, noise, len(base),
                       f"the last {rule.baseline_nights} nights drifted from {old:.4g} by more "
                       f"than {band:.4g} {unit}")
    if -worse > threshold:
        return Verdict("improved", last, center, change, threshold, noise, len(base),
                       "better than the baseline, outside its band")
    return Verdict("ok", last, center, change, threshold, noise, len(base),
                   "within the noise of the history")


def _drift(window: Sequence[float | None], earlier: Sequence[float], noise: float,
           widen: float, sign: float, rule: Rule) -> tuple[float, float] | None:
    present = [float(v) for v in window if v is not None]
    w = rule.baseline_nights
    if len(present) < 3 * w:
        return None
    old, recent = statistics.median(present[:w]), statistics.median(present[-w:])
    band = max(rule.k * noise * MEDIAN_EFFICIENCY * math.sqrt(2 / w) * widen,
               rule.drift_relative * abs(old))
    return (old, band) if sign * (recent - old) > band else None
