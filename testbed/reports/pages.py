"""The Jinja2 environment of the reports: templates are package data in templates/."""

from __future__ import annotations

import functools
import re
from typing import Any

import jinja2
from markupsafe import Markup

from testbed.reports.model import Cell, text

BOUND_KEYS = frozenset({"generator_bound", "bound"})


def md_cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def cell_class(column: str, cell: Cell, row: list[Cell]) -> Markup:
    """` class="bound"` for a true generator-bound flag, ` class="num"` for numbers."""
    if cell is True and BOUND_KEYS & {column, row[0]}:
        return Markup(' class="bound"')
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return Markup(' class="num"')
    return Markup("")


@functools.cache
def environment() -> jinja2.Environment:
    """Autoescaping for .html templates; Markdown is plain text."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("testbed.reports", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                            default_for_string=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined)
    env.filters.update(text=text, cell=md_cell)
    env.globals.update(zip=zip, cell_class=cell_class)
    return env


def render(name: str, **context: Any) -> str:
    """Render one template; runs of blank lines left by the template's blocks become one."""
    return re.sub(r"\n{3,}", "\n\n", environment().get_template(name).render(**context))
