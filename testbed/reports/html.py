"""A report Document as one self-contained HTML page: inline CSS and SVG, no scripts, no fetches."""

from __future__ import annotations

from markupsafe import Markup

from testbed.reports import pages, svg
from testbed.reports.model import Chart, Document


def chart(c: Chart) -> Markup:
    """The chart's SVG, markup to insert as is."""
    if c.kind == "line":
        body = svg.line_chart(c.title, [(s.name, s.points) for s in c.series],
                              x_label=c.x_label, y_label=c.y_label, chart_id=c.id, note=c.note,
                              log_y=c.log_y)
    else:
        body = svg.bar_chart(c.title, c.categories, [(s.name, s.values) for s in c.series],
                             y_label=c.y_label, x_label=c.x_label, chart_id=c.id,
                             flagged=c.flagged, note=c.note,
                             intervals=[s.intervals for s in c.series])
    return Markup(body)  # the SVG writer escapes every text it draws


def render(doc: Document) -> str:
    """The whole page (templates/report.html, autoescaped)."""
    return pages.render("report.html", doc=doc, chart=chart)
