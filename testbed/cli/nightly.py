"""`nightly` (a matrix of runs, its report, scheduling) and `history` (the store read back)."""

from __future__ import annotations

import csv
import dataclasses
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from testbed import console
from testbed.cli.base import _errors, _print_json, _provider, cli
from testbed.errors import UserError

PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
SINCE = re.compile(r"^(\d+)d$")
MAX_NIGHTS = 3660


def _file_arg(value: str | None, flag: str) -> None:
    if value is not None and ("\0" in value or not value.strip() or Path(value).is_dir()):
        raise UserError(f"{flag} {value!r}: not a file name; allowed: a path to a file")


@cli.command()
@click.option("--matrix", "matrix_file", default=None,
              help="Matrix file (default scenarios/nightly/default.yaml).")
@click.option("--out", default=None, help="Folder for the night's report and run directories.")
@click.option("--db", default=None, help="Results database (default per-user, or $TESTBED_DB).")
@click.option("--junit", "junit_file", default=None, help="JUnit XML: a case per series and "
                                                          "metric, failed on regression.")
@click.option("--report-only", is_flag=True, help="Report the last stored night; run nothing.")
@click.option("--cluster-prefix", default=None, help="Cluster names PREFIX-1, PREFIX-2, ...")
@click.option("--install-timer", is_flag=True, help="Write a systemd user timer and service.")
@click.option("--unit-dir", default=None, help="Where --install-timer writes (default "
                                               "~/.config/systemd/user).")
@click.option("--print-cron", is_flag=True, help="Print a crontab line for the nightly.")
@click.option("--at", "at", default="02:00", show_default=True, help="Time of day, HH:MM.")
@click.option("--nights", "nights", type=int, default=30, show_default=True,
              help="History shown and measured for noise (trend plots), in nights.")
@click.option("--json", "as_json", is_flag=True)
@_errors
def nightly(matrix_file: str | None, out: str | None, db: str | None, junit_file: str | None,
            report_only: bool, cluster_prefix: str | None, install_timer: bool,
            unit_dir: str | None, print_cron: bool, at: str, nights: int,
            as_json: bool) -> None:
    """Run the nightly matrix under one nightly id, then the nightly report (exit 1 when a
    regression is flagged)."""
    from testbed.nightly import analyze, matrix, report, rule, runner, schedule
    from testbed.paths import data_dir
    from testbed.results import Store
    from testbed.run import options

    _file_arg(junit_file, "--junit")
    options.check_db(db)
    low = rule.RULE.baseline_nights + 1
    if not low <= nights <= MAX_NIGHTS:
        raise UserError(f"--nights {nights}: out of range; allowed: {low} to {MAX_NIGHTS}")
    judged = dataclasses.replace(rule.RULE, history_nights=nights)
    spec = matrix.load(matrix_file)  # validated first, whatever else is asked
    mpath = Path(matrix_file) if matrix_file else None
    if install_timer or print_cron:
        cmd = schedule.command(mpath, db, junit_file)
        if install_timer:
            where = Path(unit_dir) if unit_dir else schedule.user_unit_dir()
            for f in schedule.install(cmd, at, where, Path.cwd()):
                console.out.print(f"wrote {f}", markup=False)
            console.out.print("enable it with: systemctl --user daemon-reload && systemctl "
                              f"--user enable --now {schedule.UNIT}.timer")
        if print_cron:
            click.echo(schedule.cron_line(cmd, at, Path.cwd(), data_dir() / "nightly.log"))
        return
    if cluster_prefix is not None and not PREFIX.match(cluster_prefix):
        raise UserError(f"--cluster-prefix {cluster_prefix!r}: not a cluster name prefix; "
                        "allowed: 1-31 of a-z, 0-9 and '-', starting with a letter or digit")
    store = Store(db) if db else Store()
    wall, night = None, None
    if not report_only:
        nightly_id = runner.new_nightly_id()
        dest = Path(out) if out else data_dir() / "nightly" / nightly_id
        planned = runner.plan(spec, dest, db)  # every entry resolved before anything starts
        provider = _provider()
        night = runner.run_night(provider, planned, nightly_id,
                                 cluster_prefix or f"nightly-{nightly_id[-6:]}")
        wall = night.seconds
        if night.interrupted and not night.outcomes[-1].run_id and len(night.outcomes) == 1:
            console.fail("interrupted before the first run was stored: nothing to report")
            sys.exit(130)
        found = analyze.analyze(store, nightly_id, judged)
    else:
        found = analyze.analyze(store, rule=judged)
        dest = Path(out) if out else data_dir() / "nightly" / found.last.nightly_id
    files = report.render(found, dest, wall)
    if junit_file:
        schedule.write_junit(found, Path(junit_file))
    flagged = found.flagged
    if as_json:
        _print_json({"nightly_id": found.last.nightly_id, "report": str(files["html"]),
                     "wall_s": wall, "flagged": [f"{r.series} {r.key}" for r in flagged],
                     "runs": [dataclasses.asdict(r) | {"environment": None}
                              for r in found.last.runs]})
    else:
        for r in flagged:
            console.out.print(f"REGRESSION {r.series} {r.key}: {r.verdict.reason}",
                              markup=False)
        console.out.print(f"nightly report: {files['html']}", markup=False)
    if night is not None and night.interrupted:
        console.fail("interrupted: the night stopped; the runs stored so far are kept")
        sys.exit(130)
    if flagged:
        sys.exit(1)


def _since(value: str | None) -> str | None:
    if value is None:
        return None
    if m := SINCE.match(value):
        return (datetime.now(UTC) - timedelta(days=int(m[1]))).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--since {value!r}: not a date; allowed: YYYY-MM-DD, an ISO 8601 UTC "
                        "time, or Nd (the last N days)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@cli.command("history")
@click.option("--cni", "cni_values", multiple=True, metavar="NAME[:BACKEND]",
              help="Only these CNIs (or series labels); repeatable.")
@click.option("--metric", "metric_globs", multiple=True, metavar="KEY|GLOB",
              help="Only these metrics, e.g. 'paths.*.rps'; repeatable.")
@click.option("--since", default=None, help="YYYY-MM-DD, an ISO time, or Nd.")
@click.option("--nightly-only", is_flag=True, help="Only runs of a night.")
@click.option("--db", default=None)
@click.option("--export", "export", default=None, metavar="FILE.csv", help="Write CSV.")
@click.option("--json", "as_json", is_flag=True)
@_errors
def history_(cni_values: tuple[str, ...], metric_globs: tuple[str, ...], since: str | None,
             nightly_only: bool, db: str | None, export: str | None, as_json: bool) -> None:
    """Stored metrics over time, one line per complete run and metric (oldest first)."""
    from testbed.results import Store, history
    from testbed.run import options

    _file_arg(export, "--export")
    options.check_db(db)
    store = Store(db) if db else Store()
    found = history.points(store, cnis=cni_values, metrics=metric_globs, since=_since(since),
                           nightly_only=nightly_only)
    rows = [dataclasses.asdict(p) for p in found]
    if export:
        fields = [f.name for f in dataclasses.fields(history.Point)]
        try:
            with open(export, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        except OSError as e:
            raise UserError(f"--export {export}: cannot write it ({e.strerror}); allowed: a "
                            "file in a folder you can write to") from e
        console.info(f"wrote {len(rows)} rows to {export}")
    if as_json:
        _print_json({"points": rows})
    elif not export:
        table = Table("started_at", "night", "series", "metric", "value", "unit", "better")
        for p in found:
            table.add_row(*(escape(c) for c in (
                p.started_at, p.nightly_id or "-", p.series, p.key,
                f"{p.value:.4g}" + (" (bound)" if p.generator_bound else ""), p.unit,
                p.better)))
        console.out.print(table)
        if not found:
            console.out.print("no stored metrics match")
