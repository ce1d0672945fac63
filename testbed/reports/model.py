"""The content of a report (sections of notes, tables, charts), rendered alike to HTML, MD, JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Cell = str | int | float | bool | None

GENERATOR_BOUND = ("generator-bound: the load generator saturated; this is not a CNI limit")


@dataclass
class Series:
    """A named series: bar values (one per category) or line points (x, y)."""

    name: str
    values: list[float | None] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    intervals: list[tuple[float, float] | None] = field(default_factory=list)  # bar error bars


@dataclass
class Chart:
    """A plot; `flagged` categories are generator-bound."""

    id: str
    kind: Literal["bar", "line"]
    title: str
    y_label: str
    x_label: str = ""
    categories: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    note: str = ""
    log_y: bool = False  # line charts: a logarithmic y axis, a marker per point


@dataclass
class Table:
    """A table of numbers; rows hold plain values (rounded once, here, for every rendering)."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    collapsed: bool = False  # long tables (time series) fold away in HTML


@dataclass
class Section:
    """A heading with warnings, builds in plain words, lines, charts and tables."""

    id: str
    title: str
    warnings: list[str] = field(default_factory=list)
    builds: list[tuple[str, str]] = field(default_factory=list)  # (build, plain-words sentence)
    lines: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href)
    folded: bool = False  # shown folded in HTML (the environment, at the end)


@dataclass
class Document:
    """A whole report; `data` holds the structured figures behind it (for report.json)."""

    kind: Literal["run", "runs", "compare", "nightly"]
    title: str
    generated_at: str
    sections: list[Section]
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready content."""
        return asdict(self)


def num(value: Any, digits: int = 3) -> Cell:
    """A table value: floats rounded to `digits` decimals, ints and bools and text unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return round(value, digits)
    return str(value)


def fnum(value: Any) -> float | None:
    """A plotted value: a float rounded like the tables, or None when missing."""
    return None if value is None else round(float(value), 3)


def text(cell: Cell) -> str:
    """How a cell reads in HTML and Markdown (the same number as report.json, without noise)."""
    if cell is None:
        return "-"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, float):
        return f"{cell:.6f}".rstrip("0").rstrip(".") if cell == cell else "nan"
    return str(cell)
