"""The nightly report: the night's runs, its regressions, every metric vs its baseline, trend
plots and environment changes, as offline HTML, Markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testbed.nightly.analyze import Analysis, Row
from testbed.nightly.plots import Band, TrendChart, trend
from testbed.reports import markdown, pages
from testbed.reports.model import Cell, Chart, Document, Section, Series, Table, num
from testbed.results.atomic import write_text
from testbed.results.summary import utc_now

VERDICT_WORDS = {"regression": "REGRESSION", "drift": "REGRESSION (drift)",
                 "improved": "improved", "ok": "ok", "missing": "no figure",
                 "insufficient": "too little history"}


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value:+.1%}"


def verdict_word(row: Row) -> str:
    """How a row's verdict reads in the tables."""
    if not row.judged:
        return "not judged (generator-bound)" if row.values[-1] is None else "not judged"
    return VERDICT_WORDS[row.verdict.status]


def _metric_table(tid: str, title: str, rows: list[Row]) -> Table:
    return Table(tid, title, ["series", "metric", "unit", "better", "last night",
                              "baseline median", "change", "band ±", "n", "verdict",
                              "environment changes"],
                 [[r.series, r.key, r.unit, r.better, num(r.verdict.last),
                   num(r.verdict.baseline), _pct(r.verdict.change), num(r.verdict.threshold),
                   r.verdict.n_baseline, verdict_word(r), "; ".join(r.env_changes) or None]
                  for r in rows])


def _band(index: int, row: Row, nights: int) -> Band | None:
    v = row.verdict
    if v.baseline is None or v.threshold is None or not row.judged:
        return None
    first = max(1, nights - v.n_baseline)
    return Band(index, float(first), float(nights), v.baseline - v.threshold,
                v.baseline + v.threshold)


def _charts(a: Analysis) -> list[Chart]:
    labels = [n.started_at[5:10] for n in a.nights]
    by_key: dict[str, list[Row]] = {}
    for r in a.rows:
        by_key.setdefault(r.key, []).append(r)
    charts: list[Chart] = []
    for i, (key, rows) in enumerate(sorted(by_key.items())):
        flagged = [r.series for r in rows if r.judged and r.verdict.flagged]
        note = f"⚠ regression: {', '.join(flagged)}" if flagged else ""
        charts.append(TrendChart(
            f"trend-{i}", "line", f"{key} ({rows[0].better} is better)", rows[0].unit,
            x_label=f"night (last {len(a.nights)}, oldest first; shaded: the rule's band "
                    "around the baseline median)", categories=labels,
            series=[Series(r.series, points=[(float(x), float(v))
                                             for x, v in enumerate(r.values, 1)
                                             if v is not None]) for r in rows],
            flagged=flagged, note=note, bands=[b for s, r in enumerate(rows)
                                               if (b := _band(s, r, len(a.nights)))]))
    return charts


def sections(a: Analysis, wall_s: float | None = None) -> list[Section]:
    """The report's sections."""
    night = a.last
    failed = [r for r in night.runs if r.status != "complete"]
    lines = [f"Night {night.nightly_id}, started {night.started_at}: {len(night.runs)} runs, "
             f"{len(failed)} not complete; {len(a.nights)} nights of history shown."]
    if wall_s is not None:
        lines.append(f"Wall time of the night: {wall_s:.0f} s.")
    runs = Table("night-runs", "Runs of the night", ["series", "run_id", "status", "started_at",
                                                     "error"],
                 [[r.series, r.run_id, r.status, r.started_at, r.error or None]
                  for r in night.runs])
    head = Section("night", "The night", lines=lines, tables=[runs],
                   warnings=[f"{r.series}: run {r.run_id} {r.status}: {r.error or '-'}"
                             for r in failed])
    rule = Section("rule", "How a regression is flagged", lines=[a.rule.text()])
    flagged = a.flagged
    regress = Section("regressions", f"Regressions ({len(flagged)})",
                      warnings=[f"{r.series} {r.key}: {r.verdict.reason}"
                                + (f" (environment: {'; '.join(r.env_changes)})"
                                   if r.env_changes else "") for r in flagged],
                      lines=[] if flagged else ["No metric is outside the noise of its history."],
                      tables=[_metric_table("regressions", "Flagged", flagged)] if flagged
                      else [])
    per_series = [Section(f"series-{i}", f"{s}: last night vs baseline",
                          tables=[_metric_table(f"metrics-{i}", s,
                                                [r for r in a.rows if r.series == s])])
                  for i, s in enumerate(sorted({r.series for r in a.rows}))]
    trends = Section("trends", "Trends", charts=_charts(a),
                     lines=["Each plot: one metric per night (the median of that night's "
                            "trials), one line per series."])
    env_rows: list[list[Cell]] = [[s, night_id, c] for s, changes in a.env.items()
                                  for night_id, cs in changes for c in cs]
    env = Section("environment", "Environment changes between nights",
                  lines=[] if env_rows else ["None: kernel, Docker, image digests, packages "
                                             "and CNI releases were the same every night."],
                  tables=[Table("env-changes", "Changes (night they first appear)",
                                ["series", "night", "change"], env_rows)] if env_rows else [])
    return [head, regress, rule, *per_series, trends, env]


def data(a: Analysis) -> dict[str, Any]:
    """report.json's figures."""
    return {"nightly_id": a.last.nightly_id, "rule": asdict(a.rule), "rule_text": a.rule.text(),
            "nights": [{"nightly_id": n.nightly_id, "started_at": n.started_at,
                        "runs": [asdict(r) | {"environment": None} for r in n.runs]}
                       for n in a.nights],
            "flagged": [{"series": r.series, "key": r.key} for r in a.flagged],
            "rows": [{"series": r.series, "key": r.key, "unit": r.unit, "better": r.better,
                      "values": r.values, "judged": r.judged, "verdict": asdict(r.verdict),
                      "env_changes": r.env_changes} for r in a.rows],
            "environment": {s: [{"nightly_id": n, "changes": cs} for n, cs in ch]
                            for s, ch in a.env.items()}}


def render(a: Analysis, out_dir: Path, wall_s: float | None = None,
           stem: str = "nightly") -> dict[str, Path]:
    """nightly.html/.md/.json in `out_dir`."""
    n = len(a.flagged)
    title = (f"testbed nightly {a.last.nightly_id}: "
             + (f"{n} regression{'s' if n != 1 else ''}" if n else "no regression"))
    doc = Document("nightly", title, utc_now(), sections(a, wall_s), data(a))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"html": out_dir / f"{stem}.html", "markdown": out_dir / f"{stem}.md",
             "json": out_dir / f"{stem}.json"}
    write_text(files["html"], pages.render("report.html", doc=doc, chart=trend))
    write_text(files["markdown"], markdown.render(doc))
    write_text(files["json"], json.dumps(doc.to_dict(), indent=2, default=str) + "\n")
    return files
