"""Recovery per fault from a phase's per-second Locust timeseries (failed share, times back),
and its failed requests by error kind."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from testbed.load.locust import totals

PRE_S = 10.0  # the pre-fault baseline: this many seconds before the fault
WITHIN = 0.10  # "back": p95/p99 within 10% of the baseline
STABLE_ROWS = 3  # ... for this many samples in a row


def _deltas(rows: Sequence[dict[str, Any]]) -> list[tuple[float, float, float, dict[str, Any]]]:
    """(t, requests, failures, row) per sample: differences of Locust's cumulative counts
    (its per-second rates are 10 s rolling means), else the rates themselves."""
    out = []
    prev: dict[str, Any] | None = None
    for row in sorted(rows, key=lambda r: float(r["t"])):
        if row.get("requests") is not None and prev is not None \
                and prev.get("requests") is not None:
            req = float(row["requests"]) - float(prev["requests"])
            fail = float(row.get("failures") or 0) - float(prev.get("failures") or 0)
        else:
            req, fail = float(row.get("rps") or 0), float(row.get("failures_per_s") or 0)
        out.append((float(row["t"]), max(req, 0.0), max(fail, 0.0), row))
        prev = row
    return out


def _baseline(samples: list[tuple[float, float, float, dict[str, Any]]], key: str,
              start: float) -> float | None:
    vals = [float(r[key]) for t, req, fail, r in samples
            if start - PRE_S <= t <= start and req - fail > 0 and r.get(key)]
    return statistics.median(vals) if vals else None


def _back(samples: list[tuple[float, float, float, dict[str, Any]]], key: str, end: float,
          base: float | None) -> float | None:
    """Seconds from `end` to the first sample of STABLE_ROWS in a row with successes and
    `key` within WITHIN of `base`."""
    if base is None:
        return None
    after = [(t, req - fail > 0 and r.get(key) is not None and float(r[key]) <= base * (1 + WITHIN))
             for t, req, fail, r in samples if t > end]
    for i, (t, _) in enumerate(after):
        run = [ok for _, ok in after[i:i + STABLE_ROWS]]
        if run and all(run) and (len(run) == STABLE_ROWS or i + len(run) == len(after)):
            return round(t - end, 2)
    return None


def recovery(rows: Sequence[dict[str, Any]], start: float, end: float,
             horizon: float | None = None) -> dict[str, Any]:
    """Failed-request share during the fault window [start, end] (Unix times), time from the
    fault to the first failure, from its end to the first success, to the last failure and
    to p95/p99 back within 10% of their pre-fault values. Times are s at Locust's 1 s
    sampling; None when it did not happen within the phase (or before `horizon`, the next
    fault's start)."""
    samples = [x for x in _deltas(rows) if horizon is None or x[0] <= horizon]
    window = [(t, req, fail) for t, req, fail, _ in samples if start < t <= end + 1]
    requests, failures = sum(r for _, r, _ in window), sum(f for _, _, f in window)
    first_fail = next((t - start for t, _, f in window if f > 0), None)
    after = [(t, req, fail) for t, req, fail, _ in samples if t > end]
    first_ok = next((t - end for t, r, f in after if r - f > 0), None)
    failing = [t - end for t, _, f in after if f > 0]
    late = [(r, f) for t, r, f in after if t <= end + PRE_S]
    p95, p99 = _baseline(samples, "p95_ms", start), _baseline(samples, "p99_ms", start)
    pre = [req - fail for t, req, fail, _ in samples if start - PRE_S < t <= start]
    ok_pre = statistics.fmean(pre) if pre else None
    span = max(end + 1 - start, 1.0)
    ok_during = (requests - failures) / span
    return {
        "window_s": round(end - start, 2),
        "requests": int(requests), "failures": int(failures),
        "failed_share": round(failures / requests, 4) if requests else None,
        # A closed-loop generator sends less while requests hang: the successes missing
        # against the pre-fault rate count what the failed share cannot.
        "ok_rps_pre": round(ok_pre, 2) if ok_pre is not None else None,
        "ok_rps_during": round(ok_during, 2),
        "throughput_drop": (round(max(0.0, 1 - ok_during / ok_pre), 4) if ok_pre else None),
        "first_failure_s": round(first_fail, 2) if first_fail is not None else None,
        "first_success_after_s": round(first_ok, 2) if first_ok is not None else None,
        "last_failure_after_s": round(max(failing), 2) if failing else 0.0,
        "failed_share_after": (round(sum(f for _, f in late) / sum(r for r, _ in late), 4)
                               if sum(r for r, _ in late) else None),
        "p95_pre_ms": p95, "p95_back_s": _back(samples, "p95_ms", end, p95),
        "p99_pre_ms": p99, "p99_back_s": _back(samples, "p99_ms", end, p99),
        "samples_after": len(after),
    }


def error_kinds(errors: Sequence[dict[str, Any]], start: float,
                horizon: float | None = None) -> dict[str, int]:
    """Failed requests per error kind from the fault's start until `horizon` (the next fault's
    start; None: the phase's end), the most frequent first. `errors` are the locustfile's rows
    {t: whole Unix second, kind, count}: a second that began before `start` counts when the fault
    began within it."""
    return totals([r for r in errors
                   if float(r["t"]) + 1 > start and (horizon is None or float(r["t"]) < horizon)])
