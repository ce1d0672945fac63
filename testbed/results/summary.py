"""The shape of a run summary (summary.json): sections, row keys, run ids, merging partial data."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from testbed.errors import TestbedError
from testbed.results.models import ROW_MODELS, RunSummary, baseline_kind

Row = dict[str, Any]
Summary = dict[str, Any]

# Row sections: lists of flat dicts. The key columns say which rows are "the same measurement",
# so a later snapshot of a row replaces an earlier one when partial data is merged.
# `trial` (1..N, absent in a run of one trial) keeps every trial's rows apart.
ROW_SECTIONS: dict[str, tuple[str, ...]] = {
    "paths": ("path", "trial"),
    "throughput": ("path", "protocol", "streams", "trial"),
    "resources": ("container", "phase", "trial"),
    "baselines": ("path", "kind", "protocol", "streams", "trial"),
    "timeseries": ("path", "t", "trial"),
}
# Dict sections: merged key by key ("meta" is merged into the top level of the summary).
DICT_SECTIONS = ("meta", "environment", "mtu", "generator", "latency", "cost", "trials",
                 "sweeps", "faults", "errors")
SECTIONS = (*ROW_SECTIONS, *DICT_SECTIONS)

# Column order for CSVs and for reading (the row models' fields); other keys are kept, after.
COLUMNS: dict[str, tuple[str, ...]] = {s: tuple(m.model_fields) for s, m in ROW_MODELS.items()}
# Summary keys always written (those with a default); the others only when set.
ALWAYS = tuple(n for n, f in RunSummary.model_fields.items() if f.default is not None)

STATUSES = ("running", "complete", "interrupted", "failed")


class ResultsError(TestbedError):
    """A result could not be recorded or read back."""


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with a Z suffix, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(cni: str, backend: str | None, when: datetime | None = None) -> str:
    """`20261126T101500Z-flannel-vxlan-1a2b3c`: sortable by time, readable, unique."""
    stamp = (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    parts = [stamp, cni, *([backend] if backend else []), secrets.token_hex(3)]
    return "-".join(p.replace("/", "_").replace(":", "-") for p in parts)


def row_key(section: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The identity of a row within its section."""
    if section == "baselines":
        row = {**row, "kind": baseline_kind(row)}
    return tuple(row.get(k) for k in ROW_SECTIONS[section])


def dedupe(section: str, rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Rows in first-seen order, each key holding its latest value."""
    latest: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        latest[row_key(section, row)] = dict(row)  # an overwrite keeps the first position
    return list(latest.values())


def status_of(summary: Mapping[str, Any]) -> str:
    """complete, interrupted or failed: an explicit valid `status` wins, else `interrupted`."""
    status = summary.get("status")
    if status in STATUSES and status != "running":
        return str(status)
    return "interrupted" if summary.get("interrupted") else "complete"


def _problem(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}={err.get('input')!r} is not valid: {err['msg']}"


def normalize(summary: Mapping[str, Any]) -> Summary:
    """A validated copy (models.RunSummary): defaults filled, rows typed and de-duplicated."""
    data: Summary = dict(summary)
    if not data.get("run_id") or not data.get("cni"):
        raise ResultsError("a run summary needs at least run_id and cni")
    for section in ROW_SECTIONS:
        if section in data:
            data[section] = dedupe(section, as_rows(data[section] or []))
    try:
        model = RunSummary.model_validate(data)
    except ValidationError as e:
        raise ResultsError(f"run {data['run_id']}: {_problem(e)}") from e
    out: Summary = model.model_dump(exclude_unset=True)
    full = model.model_dump(include=set(ALWAYS))
    for key in ALWAYS:
        out.setdefault(key, full[key])
    out["status"] = status_of(data)
    return out


def merge_partial(summary: Mapping[str, Any], partial: Mapping[str, Any]) -> Summary:
    """The summary, with anything it lacks taken from the partial record (nothing measured is lost).

    A row section the summary fills wins; one it omits or leaves empty comes from `partial`.
    Dict sections are merged (the summary's keys win). Top-level keys of `partial` (the "meta"
    section) fill keys the summary does not set.
    """
    out: Summary = dict(summary)
    for key, value in partial.items():
        if key in ROW_SECTIONS:
            if not out.get(key) and value:
                out[key] = list(value)
        elif key in DICT_SECTIONS and key != "meta" and isinstance(value, dict):
            out[key] = {**value, **(out.get(key) or {})}
        else:
            out.setdefault(key, value)
    return out


def fold(records: Iterable[tuple[str, Any]]) -> Summary:
    """Fold (section, rows) records, in the order they were made, into a summary-shaped dict."""
    out: Summary = {}
    for section, rows in records:
        if section in ROW_SECTIONS:
            out[section] = dedupe(section, [*out.get(section, []), *as_rows(rows)])
        elif section == "meta":
            for row in as_rows(rows):
                out.update(row)
        else:
            merged = dict(out.get(section) or {})
            for row in as_rows(rows):
                merged.update(row)
            out[section] = merged
    return out


def as_rows(rows: Any) -> list[Row]:
    """One dict or a list of dicts, as a list of dicts; anything else is a caller's mistake."""
    if isinstance(rows, Mapping):
        return [dict(rows)]
    if isinstance(rows, list | tuple) and all(isinstance(r, Mapping) for r in rows):
        return [dict(r) for r in rows]
    raise ResultsError(f"rows must be a dict or a list of dicts, not {type(rows).__name__}")


def check_section(section: str) -> None:
    """Refuse a section name this package does not know, naming the ones it does."""
    if section not in SECTIONS:
        raise ResultsError(f"unknown results section {section!r}: one of {', '.join(SECTIONS)}")
