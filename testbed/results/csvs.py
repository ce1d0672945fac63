"""CSV files of a run's row sections (paths.csv, throughput.csv, ...), one row per measurement."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.results.atomic import write_text
from testbed.results.summary import COLUMNS


def columns(section: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The section's documented columns first, then any extra keys the rows carry, sorted."""
    known = list(COLUMNS[section])
    extra = sorted({k for r in rows for k in r} - set(known))
    return known + extra


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def render(section: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV text for one section (header line always present)."""
    buf = io.StringIO()
    fields = columns(section, rows)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in fields})
    return buf.getvalue()


def write(directory: Path, section: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write `<section>.csv` atomically and return its path."""
    path = directory / f"{section}.csv"
    write_text(path, render(section, rows))
    return path
