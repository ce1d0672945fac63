"""The rule's false-flag rate on synthetic stable histories:
`python -m testbed.nightly.simulate [--seeds N] [--nights 30] [--cv 0.05]`."""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

from testbed.nightly.rule import RULE, Rule, judge


@dataclass(frozen=True)
class Rate:
    """How often the rule flags a metric that never changed."""

    judged: int  # night verdicts given (both directions, every night with enough history)
    flagged: int
    histories: int
    histories_flagged: int  # histories with a flag on any night

    @property
    def per_night(self) -> float:
        """Flagged share of the verdicts."""
        return self.flagged / self.judged if self.judged else 0.0

    @property
    def per_history(self) -> float:
        """Share of histories flagged at least once."""
        return self.histories_flagged / self.histories if self.histories else 0.0


def false_flags(seeds: int, nights: int = 30, cv: float = 0.05, rule: Rule = RULE) -> Rate:
    """Each seed: `nights` normal values (mean 100, sd `cv` x 100); every night from the
    first with enough history is judged as the last night, once per direction."""
    judged = flagged = hit_histories = 0
    for seed in range(seeds):
        r = random.Random(seed)
        values: list[float | None] = [100 * (1 + cv * r.gauss(0, 1)) for _ in range(nights)]
        hit = False
        for end in range(rule.min_baseline + 1, nights + 1):
            for better in ("higher", "lower"):
                v = judge(values[:end], better, rule=rule)
                judged += 1
                flagged += v.flagged
                hit = hit or v.flagged
        hit_histories += hit
    return Rate(judged, flagged, seeds, hit_histories)


def main() -> None:
    """Print the rates for the given seeds, nights and noise."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--cv", type=float, nargs="+", default=[0.02, 0.05, 0.15])
    args = ap.parse_args()
    for cv in args.cv:
        rate = false_flags(args.seeds, args.nights, cv)
        print(f"cv {cv:.0%}: {rate.flagged}/{rate.judged} night verdicts flagged "
              f"({rate.per_night:.3%}); {rate.histories_flagged}/{rate.histories} histories "
              f"of {args.nights} nights flagged at least once ({rate.per_history:.1%})")


if __name__ == "__main__":
    main()
