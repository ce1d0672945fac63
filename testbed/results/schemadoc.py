"""SCHEMA.md, generated from the models: `python3 -m testbed.results.schemadoc > SCHEMA.md`."""

from __future__ import annotations

import inspect
import re
import sqlite3
import sys
import types
from collections.abc import Iterable
from importlib import resources
from typing import Any, NotRequired, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel

from testbed.results.models import ROW_MODELS, CheckCase, CheckReport, RunSummary
from testbed.results.schema import BOOKKEEPING, DDL, TABLES
from testbed_contract.agent import ContainerRecord, PodRecord, ProbeReply, ProbeSample

TEMPLATE = "SCHEMA.in.md"  # package data beside this module


def type_name(annotation: Any, nullable: bool = True) -> str:
    """A short name for a field's type: `int`, `str or null`, `rows`, `dict`, `[ProbeSample]`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is NotRequired:
        return type_name(args[0], nullable)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        if nullable and type(None) in args:
            names.append("null")
        return " or ".join(names)
    if origin is list:
        (item,) = args
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "rows"
        return f"[{type_name(item)}]"
    if origin is dict or annotation is dict:
        return "dict"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def model_table(model: type[BaseModel], fields: Iterable[str] | None = None) -> str:
    """key | type | meaning, one line per field of `model` (all of them, or `fields`)."""
    names = list(fields) if fields is not None else list(model.model_fields)
    return _table(("key", "type", "meaning"), (
        (f"`{n}`", type_name(model.model_fields[n].annotation, nullable=False),
         model.model_fields[n].description or "") for n in names))


def _comments(td: Any) -> dict[str, str]:
    # The contract documents a key with a trailing comment on its line.
    found = (re.match(r"\s+(\w+): .*?#\s*(.+)$", line)
             for line in inspect.getsource(td).splitlines())
    return {m[1]: m[2] for m in found if m}


def typed_dict_table(td: Any) -> str:
    """key | type | required | meaning, one line per key of an agent reply (a TypedDict)."""
    hints = get_type_hints(td, include_extras=True)
    notes = _comments(td)
    return _table(("key", "type", "required", "meaning"), (
        (f"`{k}`", type_name(t), "no" if get_origin(t) is NotRequired else "yes",
         notes.get(k, "")) for k, t in hints.items()))


def _doc(obj: Any) -> str:
    return " ".join((obj.__doc__ or "").split())


def _summary() -> str:
    fields = RunSummary.model_fields
    always = [n for n, f in fields.items() if f.is_required() or f.default is not None]
    optional = [n for n in fields if n not in always]
    out = ["## summary.json\n", f"{_doc(RunSummary)}\n", "Always present:\n",
           model_table(RunSummary, always), "Present when set:\n",
           model_table(RunSummary, optional),
           "Any other key a runner records is kept as it came.\n"]
    for section, model in ROW_MODELS.items():
        out += [f"### `{section}[]` rows\n", f"{_doc(model)} Keys beyond these are kept, after "
                "them (CSV columns in this order).\n", model_table(model)]
    return "\n".join(out)


def _check() -> str:
    return "\n".join([
        "## check.json and `check --json`\n", f"{_doc(CheckReport)}\n",
        model_table(CheckReport), f"`cases[]`: {_doc(CheckCase)}\n", model_table(CheckCase)])


def _agent() -> str:
    out = ["## Node agent replies\n",
           "What `python3 -m testbed_node ...` prints and the host reads "
           "(`testbed_contract/agent.py`).\n"]
    for td in (PodRecord, ContainerRecord, ProbeReply, ProbeSample):
        out += [f"### `{td.__name__}`\n", f"{_doc(td)}\n", typed_dict_table(td)]
    return "\n".join(out)


def _metric_tables() -> str:
    db = sqlite3.connect(":memory:")
    db.executescript(DDL)
    out = []
    for section, table in TABLES.items():
        model = ROW_MODELS[section]
        cols = [(r[1], r[2]) for r in db.execute("SELECT * FROM pragma_table_info(?)", (table,))
                if r[1] not in BOOKKEEPING]
        out += [f"`{table}` (summary `{section}[]`):\n", _table(
            ("column", "type", "unit / meaning"),
            ((f"`{c}`", t, model.model_fields[c].description or "") for c, t in cols))]
    db.close()
    return "\n".join(out)


def render() -> str:
    """The whole of SCHEMA.md."""
    text = resources.files("testbed.results").joinpath(TEMPLATE).read_text(encoding="utf-8")
    text = text.split("-->\n", 1)[1]  # the note for maintainers stays out of SCHEMA.md
    records = "\n".join(p.strip("\n") + "\n" for p in (_summary(), _check(), _agent()))
    return (text.replace("<!-- records -->\n", records)
            .replace("<!-- metric tables -->\n", _metric_tables()))


__all__ = ["render", "type_name"]

if __name__ == "__main__":
    sys.stdout.write(render())
