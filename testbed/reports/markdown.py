"""A report Document as Markdown: the same sections and numbers, charts named but not drawn."""

from __future__ import annotations

from testbed.reports.model import Document, Section, Table, text


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    rows = [f"**{_cell(t.title)}**", "",
            "| " + " | ".join(_cell(c) for c in t.columns) + " |",
            "|" + "|".join("---" for _ in t.columns) + "|"]
    rows += ["| " + " | ".join(_cell(text(v)) for v in row) + " |" for row in t.rows]
    if t.collapsed:
        return ["<details><summary>" + _cell(t.title) + f" ({len(t.rows)} rows)</summary>", "",
                *rows, "", "</details>", ""]
    return [*rows, ""]


def _section(s: Section) -> list[str]:
    out = [f"## {s.title}", ""]
    out += [f"> **⚠ {w}**\n" for w in s.warnings]
    out += [f"- **{kind.upper()} build.** {sentence}" for kind, sentence in s.builds]
    if s.builds:
        out.append("")
    for line in s.lines:
        out += [line, ""]
    if s.links:
        out += [f"- [{label}]({href})" for label, href in s.links] + [""]
    for c in s.charts:
        note = f" {c.note}" if c.note else ""
        out += [f"_Chart (in the HTML report): {c.title}._{note}", ""]
    for t in s.tables:
        out += _table(t)
    return out


def render(doc: Document) -> str:
    """The whole document."""
    out = [f"# {doc.title}", "", f"_Generated {doc.generated_at} by testbed._", ""]
    for s in doc.sections:
        out += _section(s)
    return "\n".join(out).rstrip() + "\n"
