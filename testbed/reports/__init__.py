"""Reports: one run, several runs or a comparison, as offline HTML (inline SVG), Markdown, JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.analysis import verdicts
from testbed.reports import compare, describe, faults, html, markdown, run, verdict
from testbed.reports.model import Document, Section, Table, num
from testbed.results.atomic import write_text
from testbed.results.summary import utc_now

REPORT_FILES = ("report.html", "report.md", "report.json")


def _write(doc: Document, out_dir: str | Path, stem: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"html": out / f"{stem}.html", "markdown": out / f"{stem}.md",
             "json": out / f"{stem}.json"}
    write_text(files["html"], html.render(doc))
    write_text(files["markdown"], markdown.render(doc))
    write_text(files["json"], json.dumps(doc.to_dict(), indent=2, default=str) + "\n")
    return files


def _artifacts(out_dir: Path, stem: str) -> list[tuple[str, str]]:
    if not out_dir.is_dir():
        return []
    mine = {f"{stem}.html", f"{stem}.md", f"{stem}.json"}
    return [(p.name, p.name) for p in sorted(out_dir.iterdir())
            if p.is_file() and p.name not in mine and not p.name.startswith(".")]


def render_run(summary: Mapping[str, Any], out_dir: str | Path,
               stem: str = "report") -> dict[str, Path]:
    """report.html/.md/.json for one run; links the other files in `out_dir` (CSVs, Locust's)."""
    title = f"testbed: {describe.cni_label(summary)} run {summary.get('run_id', '?')}"
    if summary.get("interrupted"):
        title += " (INTERRUPTED)"
    doc = Document("run", title, utc_now(),
                   run.sections(summary, links=_artifacts(Path(out_dir), stem)),
                   {"runs": [dict(summary)]})
    return _write(doc, out_dir, stem)


def render_many(summaries: Sequence[Mapping[str, Any]], out_dir: str | Path,
                stem: str = "report") -> dict[str, Path]:
    """One page for several runs (`report --last N`): an index, then each run in full."""
    index = Table("runs-index", "Runs", ["run_id", "cni", "backend", "build", "status",
                                         "started_at", "duration_s", "users"],
                  [[s.get("run_id"), s.get("cni"), s.get("backend"), describe.build_kind(s),
                    s.get("status") or ("interrupted" if s.get("interrupted") else "complete"),
                    s.get("started_at"), num(s.get("duration_s")), s.get("users")]
                   for s in summaries])
    sections = [Section("runs", f"{len(summaries)} runs", tables=[index])]
    for i, s in enumerate(summaries):
        sections += run.sections(s, prefix=f"r{i + 1}-")
    doc = Document("runs", f"testbed: {len(summaries)} runs", utc_now(), sections,
                   {"runs": [dict(s) for s in summaries]})
    return _write(doc, out_dir, stem)


def render_compare(summaries: Sequence[Mapping[str, Any]], out_dir: str | Path,
                   stem: str = "compare") -> dict[str, Path]:
    """The verdict per metric first, then the curves, then each metric per path per column
    (vs the ceiling and the best); what ran and the environment last, folded."""
    details, data = compare.sections(summaries)
    labels = compare.labels(summaries)
    rows = verdicts.table(list(zip(labels, summaries, strict=True)))
    data["verdicts"] = [r.to_dict() for r in rows]
    head = [s for s in details if s.id == "columns"]
    for s in head:
        s.title, s.folded = "What ran: builds, versions and the environment", True
    side = faults.compare_section(labels, summaries)
    sections = [verdict.verdict_section(rows, labels),
                verdict.curves_section(rows, labels), *([side] if side else []),
                *(s for s in details if s.id != "columns"), *head]
    title = "testbed compare: " + ", ".join(labels)
    doc = Document("compare", title, utc_now(), sections, data)
    return _write(doc, out_dir, stem)


__all__ = ["REPORT_FILES", "render_compare", "render_many", "render_run"]
