"""A report Document as one self-contained HTML page: inline CSS and SVG, no scripts, no fetches."""

from __future__ import annotations

from html import escape

from testbed.reports import svg
from testbed.reports.model import Chart, Document, Section, Table, text

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem;
  border-bottom: 2px solid #ccc; padding-bottom: .2rem; }
.generated { color: #666; font-size: .9rem; }
.warning { background: #fff1e6; border-left: 6px solid #d55e00; padding: .5rem .8rem;
           font-weight: bold; color: #7a2e00; }
.build { padding: .5rem .8rem; border-left: 6px solid #888; background: #f4f4f4; }
.build.upstream { border-color: #009e73; background: #eaf7f2; }
.build.source { border-color: #0072b2; background: #e9f2fa; }
.build .tag { font-weight: bold; letter-spacing: .05em; }
figure { margin: 1rem 0; overflow-x: auto; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .85rem; }
caption { text-align: left; font-weight: bold; padding: .3rem 0; white-space: nowrap; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.bound { background: #fde2d2; color: #7a2e00; font-weight: bold; }
nav ul { columns: 2; }
ul.artifacts { font-size: .9rem; padding: 0; } ul.artifacts li { display: inline; }
ul.artifacts li + li::before { content: " · "; }
.wide { overflow-x: auto; }
details summary { cursor: pointer; margin: .6rem 0; }
"""


def _chart(c: Chart) -> str:
    if c.kind == "line":
        body = svg.line_chart(c.title, [(s.name, s.points) for s in c.series],
                              x_label=c.x_label, y_label=c.y_label, chart_id=c.id, note=c.note)
    else:
        body = svg.bar_chart(c.title, c.categories, [(s.name, s.values) for s in c.series],
                             y_label=c.y_label, x_label=c.x_label, chart_id=c.id,
                             flagged=c.flagged, note=c.note)
    return f"<figure>{body}</figure>"


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        cells = []
        for col, cell in zip(t.columns, row, strict=False):
            if cell is True and ({"generator_bound", "bound"} & {col, row[0]}):
                cls = ' class="bound"'
            elif isinstance(cell, int | float) and not isinstance(cell, bool):
                cls = ' class="num"'
            else:
                cls = ""
            cells.append(f"<td{cls}>{escape(text(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = (f'<table id="{escape(t.id)}"><caption>{escape(t.title)}</caption>'
             f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    table = f'<div class="wide">{table}</div>'
    if t.collapsed:
        summary = f"{escape(t.title)} ({len(t.rows)} rows)"
        return f"<details><summary>{summary}</summary>{table}</details>"
    return table


def _section(s: Section) -> str:
    out = [f'<section id="{escape(s.id)}"><h2>{escape(s.title)}</h2>']
    out += [f'<p class="warning">⚠ {escape(w)}</p>' for w in s.warnings]
    for kind, sentence in s.builds:
        out.append(f'<p class="build {escape(kind)}"><span class="tag">'
                   f"{escape(kind.upper())} build.</span> {escape(sentence)}</p>")
    out += [f"<p>{escape(line)}</p>" for line in s.lines]
    if s.links:
        out.append('<ul class="artifacts">Files: ' + "".join(
            f'<li><a href="{escape(href)}">{escape(label)}</a></li>' for label, href in s.links)
            + "</ul>")
    out += [_chart(c) for c in s.charts]
    out += [_table(t) for t in s.tables]
    out.append("</section>")
    return "\n".join(out)


def render(doc: Document) -> str:
    """The whole page."""
    nav = ""
    if len(doc.sections) > 6:
        nav = "<nav><ul>" + "".join(f'<li><a href="#{escape(s.id)}">{escape(s.title)}</a></li>'
                                    for s in doc.sections) + "</ul></nav>"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<header><h1>{escape(doc.title)}</h1><p class=\"generated\">Generated "
        f"{escape(doc.generated_at)} by testbed. Self-contained: works offline.</p></header>",
        nav, *(_section(s) for s in doc.sections), "</body>", "</html>", ""])
