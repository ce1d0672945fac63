"""The last night against its history: per series and metric, the rule's verdict, the trend
and the environment changes that may explain a change."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import UserError
from testbed.nightly.rule import RULE, Rule, Verdict, judge
from testbed.results import Store, history
from testbed.results.history import Night, NightRun

# Environment keys compared night to night (dicts are compared key by key).
ENV_KEYS = ("kernel", "docker_version", "release", "module", "build_note", "image_digests",
            "packages")


@dataclass
class Row:
    """One series' metric over the nights (None: no figure that night)."""

    series: str
    key: str
    unit: str
    better: str
    values: list[float | None]
    judged: bool  # False: a floor or generator-bound on the last night
    verdict: Verdict
    env_changes: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    """Everything the nightly report shows."""

    nights: list[Night]  # oldest first; the last is the night reported
    rows: list[Row]
    env: dict[str, list[tuple[str, list[str]]]]  # series -> [(night id, changes)]
    rule: Rule

    @property
    def last(self) -> Night:
        """The night reported."""
        return self.nights[-1]

    @property
    def flagged(self) -> list[Row]:
        """Rows the rule calls a regression."""
        return [r for r in self.rows if r.judged and r.verdict.flagged]


def _flat(env: Mapping[str, Any], run: NightRun) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in ENV_KEYS:
        value = env.get(key)
        if key == "release" and not value:
            value = run.release or None
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": str(v) for k, v in value.items()})
        elif value is not None:
            out[key] = str(value)
    return out


def env_diff(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """`kernel: 6.1.0-10 -> 6.1.0-12` per key whose value changed, appeared or went away."""
    return [f"{k}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _env_of(night: Night, series: str) -> dict[str, str] | None:
    for run in night.runs:
        if run.series == series and run.environment:
            return _flat(run.environment, run)
    return None


def _env_changes(nights: list[Night], series: str) -> list[tuple[str, list[str]]]:
    out, before = [], None
    for night in nights:
        now = _env_of(night, series)
        if now is None:
            continue
        if before is not None and (changes := env_diff(before, now)):
            out.append((night.nightly_id, changes))
        before = now
    return out


def _since(changes: list[tuple[str, list[str]]], nights: list[Night], back: int) -> list[str]:
    """Changes made in the last `back` nights (1: between the previous night and the last)."""
    recent = {n.nightly_id for n in nights[-back:]}
    return [c for night_id, cs in changes if night_id in recent for c in cs]


def analyze(store: Store, nightly_id: str | None = None, rule: Rule = RULE) -> Analysis:
    """The night `nightly_id` (default: the newest stored) and the nights before it."""
    every = history.nights(store)
    if not every:
        raise UserError("no nights stored yet: run `python -m testbed nightly` first")
    ids = [n.nightly_id for n in every]
    if nightly_id is not None and nightly_id not in ids:
        raise UserError(f"no stored night {nightly_id!r}; allowed: one of {', '.join(ids[-5:])}")
    end = ids.index(nightly_id) + 1 if nightly_id else len(every)
    nights = every[max(0, end - rule.history_nights):end]
    index = {n.nightly_id: i for i, n in enumerate(nights)}
    found: dict[tuple[str, str], dict[int, list[float]]] = {}
    meta: dict[tuple[str, str], tuple[str, str]] = {}
    judged_last: dict[tuple[str, str], bool] = {}
    for p in history.points(store, nightly_only=True, since=nights[0].started_at):
        i = index.get(p.nightly_id or "")
        if i is None:
            continue
        key = (p.series, p.key)
        meta.setdefault(key, (p.unit, p.better))
        if i == len(nights) - 1:
            judged_last[key] = judged_last.get(key, True) and p.ranked
        if p.ranked:  # floors and generator-bound figures never enter a baseline
            found.setdefault(key, {}).setdefault(i, []).append(p.value)
        elif i == len(nights) - 1:
            found.setdefault(key, {})
    series_last = {r.series for r in nights[-1].runs}
    env = {s: _env_changes(nights, s) for s in sorted(series_last)}
    rows = []
    for (series, name), per_night in sorted(found.items()):
        if series not in series_last:
            continue
        unit, better = meta[(series, name)]
        values = [statistics.median(per_night[i]) if i in per_night else None
                  for i in range(len(nights))]
        judged = judged_last.get((series, name), False)
        if not judged and all(v is None for v in values):
            continue  # a floor without a CNI on its path: context, not a CNI's figure
        verdict = judge(values, better, unit, rule)
        row = Row(series, name, unit, better, values, judged, verdict)
        if judged and verdict.flagged:
            back = rule.history_nights if verdict.status == "drift" else 1
            row.env_changes = _since(env[series], nights, back)
        rows.append(row)
    return Analysis(nights, rows, env, rule)
