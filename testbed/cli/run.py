"""`run`, `compare` and `report`: load runs, their comparison and stored results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from testbed import console
from testbed.cli.base import _errors, _print_json, _provider, cli
from testbed.cli.cluster import parse_images
from testbed.errors import CheckFailed, UserError

MAX_LAST = 100_000  # runs rendered in one report


@cli.command("run")
@click.argument("cni_value", metavar="CNI[:BACKEND]")
@click.option("--scenario", default=None, help="Scenario file (default scenarios/default.yaml).")
@click.option("--duration", type=float, default=None, help="Seconds of load per path.")
@click.option("--users", type=int, default=None, help="Locust users per path.")
@click.option("--spawn-rate", type=float, default=None, help="Users started per second.")
@click.option("--seed", type=int, default=None)
@click.option("--web", is_flag=True, help="Locust's web UI on 127.0.0.1 against the cluster.")
@click.option("--web-port", type=int, default=8089, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the cluster afterwards.")
@click.option("--out", default=None, help="Folder for run directories.")
@click.option("--db", default=None, help="Results database (default per-user, or $TESTBED_DB).")
@click.option("--image", "image_overrides", multiple=True, metavar="ROLE=REF")
@click.option("--build", type=click.Choice(["auto", "upstream", "source"]), default=None)
@click.option("--trials", type=int, default=1, show_default=True,
              help="Repeat the measurements N times on the same cluster (medians, intervals).")
@click.option("--sweep/--no-sweep", default=None,
              help="The open-loop vegeta sweep after Locust (default: the scenario's "
                   "sweep.enabled, on).")
@click.option("--json", "as_json", is_flag=True)
@_errors
def run_(cni_value: str, scenario: str | None, duration: float | None, users: int | None,
         spawn_rate: float | None, seed: int | None, web: bool, web_port: int, keep: bool,
         out: str | None, db: str | None, image_overrides: tuple[str, ...], build: str | None,
         trials: int, sweep: bool | None, as_json: bool) -> None:
    """Up, check, ceilings, Locust load per path, iperf3, store, report, down."""
    from testbed.run import options, pipeline

    opts = options.RunOptions(cni_value, scenario, duration, users, spawn_rate, seed, web,
                              web_port, keep, out, db)
    options.check_trials(trials)
    spec, module, backend, out_dir = options.resolve(opts)
    overrides = parse_images(image_overrides)
    if overrides:
        from testbed.cni.select import check_overrides

        spec.cni.images.update(overrides)
        check_overrides(module, spec.cni.images)
    if build:
        spec.cni.build = build  # type: ignore[assignment]
    if sweep is not None:
        spec.sweep.enabled = sweep
    provider = _provider()
    if web:
        from testbed.run import web as web_ui

        web_ui.serve(provider, spec, module, backend, opts)
        return
    run = pipeline.start(provider, spec, module, backend, opts, out_dir, trials=trials)
    console.info(f"Run {run.rundir.run_id if run.rundir else ''}: {module.name} ({backend}), "
                 f"{spec.load.users} users, {spec.load.duration_s:g}s per path")
    summary = pipeline.execute(run)
    if as_json:
        _print_json(summary)
    else:
        _print_run(summary)


def _print_run(summary: dict[str, Any]) -> None:
    table = Table("path", "requests", "failures", "rps", "p50 ms", "p95 ms", "p99 ms",
                  "generator")
    for row in [*summary.get("baselines", []), *summary.get("paths", [])]:
        if "requests" not in row:
            continue
        table.add_row(row["path"], str(row["requests"]), str(row["failures"]),
                      f"{row['rps']:.1f}", f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}",
                      f"{row['p99_ms']:.1f}", "BOUND" if row.get("generator_bound") else "ok")
    console.out.print(table)
    for t in summary.get("throughput", []):
        console.out.print(f" {t['path']:24} {t['protocol']} x{t['streams']}: "
                          f"{t['gbit_s']:.2f} Gbit/s (MTU {t.get('mtu', '?')})")
    console.out.print(f"build: {summary.get('build')}; report: {summary.get('report')}")


@cli.command()
@click.argument("cni_values", nargs=-1, required=True, metavar="CNI[:BACKEND]...")
@click.option("--scenario", default=None)
@click.option("--duration", type=float, default=None)
@click.option("--users", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--out", default=None)
@click.option("--db", default=None)
@click.option("--trials", type=int, default=3, show_default=True,
              help="Rounds of measurements; the CNI order rotates between rounds.")
@click.option("--mtu", "mtus", default=None, metavar="A,B,...",
              help="An MTU sweep: every CNI once per pod MTU given.")
@click.option("--json", "as_json", is_flag=True)
@_errors
def compare(cni_values: tuple[str, ...], scenario: str | None, duration: float | None,
            users: int | None, seed: int | None, out: str | None, db: str | None,
            trials: int, mtus: str | None, as_json: bool) -> None:
    """Every CNI given on the same scenario and seed, trials interleaved, then a verdict."""
    from testbed.reports import render_compare
    from testbed.run import compare as comparing
    from testbed.run import options, pipeline

    options.check_trials(trials)
    sweep = options.parse_mtus(mtus)
    plans = []
    seen: dict[tuple[str, str, str, int | None], str] = {}
    for value, mtu in ((v, m) for v in cni_values for m in sweep):  # all checked up front
        opts = options.RunOptions(value, scenario, duration, users, None, seed, out=out, db=db)
        plans.append((opts, *options.resolve(opts)))
        spec, module, backend = plans[-1][1:4]
        if mtu is not None:
            options.check_mtu(module, backend, mtu)
            spec.cni.mtu = mtu
        key = (module.name, backend, spec.cni.version or module.default_release, mtu)
        if key in seen:
            raise UserError(f"compare {value!r}: the same CNI as {seen[key]!r} "
                            f"({key[0]}:{key[1]}@{key[2]}); allowed: different CNIs, backends "
                            "or releases")
        seen[key] = value
    if len(plans) < 2:
        raise UserError(f"compare needs at least two CNIs or MTUs, got {len(plans)}; allowed: "
                        "e.g. `python -m testbed compare flannel calico` or `compare flannel "
                        "--mtu 1200,1400`")
    provider = _provider()
    runs = [pipeline.start(provider, spec, module, backend, opts, out_dir, trials=trials)
            for opts, spec, module, backend, out_dir in plans]
    summaries = comparing.execute_many(runs, trials)
    dest = Path(plans[0][4]) / f"compare-{summaries[0]['run_id']}"
    files = render_compare(summaries, dest)
    data = json.loads(files["json"].read_text(encoding="utf-8"))["data"]
    doc = {"runs": [s["run_id"] for s in summaries], "report": str(files["html"]),
           "trials": trials, "verdicts": data.get("verdicts", [])}
    if as_json:
        _print_json(doc)
    else:
        _print_verdicts(data.get("verdicts", []))
        console.out.print(f"comparison report: {files['html']}")
    failed = next((s for s in summaries if s.get("status") == "failed"), None)
    if failed is not None:
        raise CheckFailed(f"{failed.get('cni')}:{failed.get('backend')} failed: "
                          f"{failed.get('error')} (the report keeps what it measured)")


def _print_verdicts(verdicts: list[dict[str, Any]]) -> None:
    table = Table("metric", "winner", "margin", "significant", "why")
    for v in verdicts:
        if not v["ranked"]:
            continue
        table.add_row(v["metric"], v["winner"] or "no difference",
                      f"{v['margin']:.0%}" if v["margin"] is not None else "-",
                      "yes" if v["significant"] else "no", v["why"] or v["reason"])
    console.out.print(table)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--last", "last", type=int, default=None, help="The last N runs.")
@click.option("--out", default=None, help="Where to write the report.")
@click.option("--db", default=None)
@_errors
def report(run_id: str | None, last: int | None, out: str | None, db: str | None) -> None:
    """Render stored runs (one RUN_ID, or --last N) as HTML, Markdown and JSON."""
    from testbed.reports import render_many, render_run
    from testbed.results import Store
    from testbed.run import options
    from testbed.run.options import default_out

    if (run_id is not None) == (last is not None):
        raise UserError("give a RUN_ID or --last N (one of them)")
    if run_id is not None and not run_id.strip():
        raise UserError("RUN_ID is empty; allowed: a stored run's id (see `python -m testbed "
                        "report --last 5`)")
    if last is not None and not 1 <= last <= MAX_LAST:
        raise UserError(f"--last {last}: out of range; allowed: 1 to {MAX_LAST}")
    options.check_db(db)
    store = Store(db) if db else Store()
    if run_id:
        summary = store.get(run_id)
        if summary is None:
            raise UserError(f"no stored run {run_id!r}: see `python -m testbed report --last 5`")
        files = render_run(summary, Path(out) if out else Path(summary.get("run_dir")
                                                                 or default_out() / run_id))
    else:
        assert last is not None
        runs = store.last(last)
        if not runs:
            raise UserError("no runs stored yet: start one with `python -m testbed run flannel`")
        files = render_many(runs, Path(out) if out else default_out() / "reports")
    console.out.print(f"report: {files['html']}")
