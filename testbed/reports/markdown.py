"""A report Document as Markdown: the same sections and numbers, charts named but not drawn."""

from __future__ import annotations

from testbed.reports import pages
from testbed.reports.model import Document


def render(doc: Document) -> str:
    """The whole document (templates/report.md)."""
    return pages.render("report.md", doc=doc).rstrip() + "\n"
