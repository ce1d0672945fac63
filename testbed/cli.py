"""The command line: `python -m testbed doctor|images|up|status|list|check|down ...`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from testbed import cni as cnis
from testbed import console
from testbed.constants import DEFAULT_CLUSTER, MAX_NODES, MIN_NODES
from testbed.errors import CheckFailed, TestbedError, UserError
from testbed.provider.base import Provider

F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """Turn domain errors into one line and the contract's exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TestbedError as e:
            console.fail(str(e))
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            console.fail("interrupted")
            sys.exit(130)
        except OSError as e:  # a file or folder the user named (or the cache) is unusable
            where = f" ({e.filename})" if e.filename else ""
            console.fail(f"{e.strerror or e}{where}: check that the path exists and is "
                         "writable (cache: $TESTBED_CACHE, data: $TESTBED_DATA)")
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def _provider() -> Provider:
    from testbed.provider.docker import DockerProvider

    return DockerProvider()


class _Group(click.Group):
    """Bad usage is bad input: exit 2 with one line (click's default is also 2)."""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="testbed")
def cli() -> None:
    """Multi-node CNI testbed on Docker: real Flannel, Calico and Weave Net, compared."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_errors
def doctor(as_json: bool) -> None:
    """Check Docker, node capabilities, kernel features, disk and images."""
    from testbed import doctor as doc

    report = doc.run()
    if as_json:
        _print_json(report)
    else:
        doc.render(report)
    if not report["ok"]:
        raise UserError(report["blocking"])


@cli.group()
def images() -> None:
    """Build, list or load the images clusters run on."""


@images.command("build")
@click.option("--cni", "cni_name", default=None,
              help="Only this CNI's images (NAME[@VERSION]); default: every CNI.")
@click.option("--build", "build", type=click.Choice(["source", "upstream"]),
              default="source", show_default=True)
@_errors
def images_build(cni_name: str | None, build: str) -> None:
    """Build the base rootfs, the role images and the CNIs' images from upstream source
    (cached by content hash: a warm build rebuilds nothing)."""
    from testbed import images as imgs
    from testbed.cni.select import source_specs

    if build == "upstream":
        raise UserError("upstream images are not built here: load them with "
                        "`python -m testbed images load FILE.tar`")
    specs = source_specs((cni_name,) if cni_name else ())
    tags = imgs.ensure(_provider().images, specs)
    for name, tag in tags.items():
        console.info(f" {name:32} {tag}")


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
@_errors
def images_list(as_json: bool) -> None:
    """Show each image: source builds and upstream references, present or not."""
    from testbed.cni.inventory import inventory

    rows = inventory(_provider().images)
    if as_json:
        _print_json(rows)
        return
    table = Table("image", "kind", "cni", "image reference", "present")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["cni"] or "-", r["ref"],
                      "yes" if r["present"] else "no")
    console.out.print(table)


@images.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@_errors
def images_load(file: str) -> None:
    """Load upstream images from a `docker save` tarball (air-gapped users)."""
    from testbed.cni.inventory import load

    for tag in load(_provider().images, Path(file)):
        console.info(f" loaded {tag}")


@cli.command()
@click.argument("scenario", required=False)
@click.option("--cni", "cni_value", default=None,
              help="NAME[:BACKEND][@VERSION], e.g. flannel:host-gw or calico@v3.31.0")
@click.option("--nodes", type=int, default=None, help=f"{MIN_NODES}-{MAX_NODES}")
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.option("--build", type=click.Choice(["auto", "upstream", "source"]), default=None)
@click.option("--retain", is_flag=True, help="Keep what was created if `up` fails.")
@click.option("--image", "image_overrides", multiple=True, metavar="ROLE=REF",
              help="Use this image for a CNI role (e.g. daemon=docker.io/flannel/flannel:v0.28.1).")
@_errors
def up(scenario: str | None, cni_value: str | None, nodes: int | None, name: str,
       build: str | None, retain: bool, image_overrides: tuple[str, ...]) -> None:
    """Create a cluster: etcd, N nodes, the CNI's daemons, and the scenario's pods."""
    from testbed.cluster.handle import Cluster
    from testbed.cluster.model import validate_name

    validate_name(name)
    spec, module, backend = _scenario(scenario, cni_value, nodes, build)
    spec.cni.images.update(parse_images(image_overrides))
    ctx = Cluster.create(_provider(), spec, name, module, backend, retain=retain).ctx
    assert ctx is not None and ctx.selection is not None
    console.info(f"Cluster {name!r} is up: {len(ctx.nodes)} nodes, {module.name} "
                 f"{ctx.selection.release} ({backend}, {ctx.selection.build} build), "
                 f"{len(ctx.pods)} pods. "
                 f"Next: `python -m testbed check{'' if name == DEFAULT_CLUSTER else ' ' + name}`")


def parse_images(values: tuple[str, ...]) -> dict[str, str]:
    """`--image ROLE=REF` pairs; a malformed one is bad input."""
    out = {}
    for value in values:
        role, sep, ref = value.partition("=")
        if not sep or not role.strip() or not ref.strip():
            raise UserError(f"--image {value!r}: use ROLE=IMAGE, e.g. daemon=docker.io/flannel/"
                            "flannel:v0.28.1")
        out[role.strip()] = ref.strip()
    return out


def _scenario(path: str | None, cni_value: str | None, nodes: int | None,
              build: str | None) -> tuple[Any, cnis.Cni, str]:
    """Load a scenario and apply command-line overrides, validating everything first."""
    from testbed import scenario as sc

    spec = sc.load(path)
    if nodes is not None:
        if not MIN_NODES <= nodes <= MAX_NODES:
            raise UserError(f"--nodes {nodes} is out of range: use {MIN_NODES} to {MAX_NODES}")
        spec.nodes = nodes
    if cni_value:
        module, _, version = cnis.parse(cni_value)
        backend = cni_value.partition("@")[0].partition(":")[2]
        if module.name != spec.cni.name:
            spec.cni.images, spec.cni.version, spec.cni.module = {}, None, None
        spec.cni.name, spec.cni.backend = module.name, backend or None
        if version:
            spec.cni.version = version
    if build:
        spec.cni.build = build  # type: ignore[assignment]
    label = spec.cni.name + (f":{spec.cni.backend}" if spec.cni.backend else "")
    module, backend, _ = cnis.parse(label)
    return spec, module, backend


@cli.command()
@click.argument("name", required=False, default=DEFAULT_CLUSTER)
@click.option("--json", "as_json", is_flag=True)
@_errors
def status(name: str, as_json: bool) -> None:
    """Per node: state, CNI daemons, pod CIDR, pods."""
    from testbed.lifecycle.inspect import status as read

    doc = read(_provider(), name)
    if as_json:
        _print_json(doc)
        return
    console.out.print(f"cluster {doc['cluster']}: {doc['cni']} ({doc['backend']}), "
                      f"{doc['build']} build, {doc['state']}")
    if doc.get("hint"):
        console.info(f" ! {doc['hint']}")
    table = Table("node", "ip", "state", "cni daemons", "pod cidr", "pods", "cni")
    for n in doc["nodes"]:
        daemons = ", ".join(f"{d['name']} {d['state']}" for d in n["cni_daemons"]) or "-"
        table.add_row(n["name"], n["ip"] or "-", n["state"], daemons, n.get("pod_cidr") or "-",
                      str(len(n.get("pods", []))), _cni_facts(n))
    console.out.print(table)
    if doc.get("edge"):
        ing = doc["edge"]["ingress"]
        console.out.print(f"ingress {ing['name']} ({ing['state']}, on {ing['node']}): "
                          f"{ing['url'] or 'not published'}")


_NODE_KEYS = {"name", "ip", "state", "cni_daemons", "pod_cidr", "pods", "error"}


def _cni_facts(node: dict[str, Any]) -> str:
    """CNI-specific facts of a node (BGP peers, weave datapath, ...) in one short cell."""
    parts = []
    for key, value in node.items():
        if key in _NODE_KEYS or value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            text = f"{len(value)}"
            states = [str(v.get("state")) for v in value if isinstance(v, dict) and "state" in v]
            if states:
                text += f" ({', '.join(sorted(set(states)))})"
        elif isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in list(value.items())[:3]
                             if not isinstance(v, dict | list))
        else:
            text = str(value)
        parts.append(f"{key}: {text}")
    return "; ".join(parts)[:120] or "-"


@cli.command("list")
@click.option("--json", "as_json", is_flag=True)
@_errors
def list_(as_json: bool) -> None:
    """Every testbed cluster on this Docker engine."""
    from testbed.lifecycle.inspect import clusters

    rows = clusters(_provider())
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.info("no clusters")
        return
    table = Table("name", "state", "cni", "backend", "build", "nodes", "containers running")
    for r in rows:
        table.add_row(r["name"], r["state"], r["cni"], r["backend"], r["build"],
                      str(r["nodes"]), f"{r['running']}/{r['containers']}")
    console.out.print(table)


@cli.command()
@click.argument("name", required=False, default=DEFAULT_CLUSTER)
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", type=click.Path(dir_okay=False), default=None)
@click.option("--spread", "with_spread", is_flag=True,
              help="Also count requests per endpoint through a ClusterIP against 1/n.")
@_errors
def check(name: str, as_json: bool, junit: str | None, with_spread: bool) -> None:
    """Run the connectivity matrix from inside pods; exit 1 if any case fails."""
    from testbed.check import junit as junit_xml
    from testbed.check.matrix import report, run
    from testbed.cluster.model import find

    provider = _provider()
    cluster = find(provider, name)
    doc = report(cluster, run(provider, cluster))
    spread_ok = True
    if with_spread:
        from testbed.check.services import spread

        sp = spread(provider, cluster.name)
        spread_ok = sp.ok
        doc["spread"] = {"service": sp.service, "url": sp.url, "src": sp.src,
                         "requests": sp.requests, "failures": sp.failures, "rule": sp.rule,
                         "ok": sp.ok, "endpoints": sp.table(), "strays": sp.strays}
    if junit:
        junit_xml.write(doc, Path(junit))
    if as_json:
        _print_json(doc)
    else:
        table = Table("path", "src", "dst", "status", "latency ms", "reason")
        colour = {"pass": "green", "fail": "red", "skip": "yellow"}
        for c in doc["cases"]:
            table.add_row(c["path"], c["src"], c["dst"],
                          f"[{colour[c['status']]}]{c['status']}[/]",
                          f"{c['latency_ms']:.2f}", c["reason"])
        console.out.print(table)
        if "spread" in doc:
            sp_doc = doc["spread"]
            t2 = Table("endpoint pod", "node", "hits", "share", "expected", "ok")
            for r in sp_doc["endpoints"]:
                t2.add_row(r["pod"], r["node"], str(r["hits"]), f"{r['share']:.3f}",
                           f"{r['expected']:.3f}", "yes" if r["ok"] else "NO")
            console.out.print(f"spread through {sp_doc['service']} ({sp_doc['url']}, "
                              f"{sp_doc['requests']} requests from {sp_doc['src']}):")
            console.out.print(t2)
            console.out.print(f"bound: {sp_doc['rule']}")
    if not spread_ok:
        raise CheckFailed(f"spread through {doc['spread']['service']} is outside its bound: "
                          f"{doc['spread']['rule']}")
    failed = [c for c in doc["cases"] if c["status"] == "fail"]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(doc['cases'])} cases failed; first: "
                          f"{failed[0]['path']} {failed[0]['src']} -> {failed[0]['dst']}: "
                          f"{failed[0]['reason']}")


@cli.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Every testbed cluster.")
@click.option("--prefix", default="", help="With --all: only clusters whose name starts so.")
@_errors
def down(name: str | None, all_: bool, prefix: str) -> None:
    """Remove a cluster's containers, networks and volumes (found by label)."""
    from testbed.cluster.handle import select, teardown

    provider = _provider()
    names = select(provider, name, all_, prefix)
    if not names and not all_:
        console.info(f"no cluster named {name or DEFAULT_CLUSTER!r}; nothing to remove")
    teardown(provider, names)


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
@click.option("--json", "as_json", is_flag=True)
@_errors
def run_(cni_value: str, scenario: str | None, duration: float | None, users: int | None,
         spawn_rate: float | None, seed: int | None, web: bool, web_port: int, keep: bool,
         out: str | None, db: str | None, image_overrides: tuple[str, ...], build: str | None,
         as_json: bool) -> None:
    """Up, check, ceilings, Locust load per path, iperf3, store, report, down."""
    from testbed.run import options, pipeline

    opts = options.RunOptions(cni_value, scenario, duration, users, spawn_rate, seed, web,
                              web_port, keep, out, db)
    spec, module, backend, out_dir = options.resolve(opts)
    spec.cni.images.update(parse_images(image_overrides))
    if build:
        spec.cni.build = build  # type: ignore[assignment]
    provider = _provider()
    if web:
        from testbed.run import web as web_ui

        web_ui.serve(provider, spec, module, backend, opts)
        return
    run = pipeline.start(provider, spec, module, backend, opts, out_dir)
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
@click.option("--json", "as_json", is_flag=True)
@_errors
def compare(cni_values: tuple[str, ...], scenario: str | None, duration: float | None,
            users: int | None, seed: int | None, out: str | None, db: str | None,
            as_json: bool) -> None:
    """Run one scenario and seed for each CNI given, then a side-by-side report."""
    from testbed.reports import render_compare
    from testbed.run import options, pipeline

    plans = []
    for value in cni_values:  # validate every CNI before anything starts
        opts = options.RunOptions(value, scenario, duration, users, None, seed, out=out, db=db)
        plans.append((opts, *options.resolve(opts)))
    provider = _provider()
    summaries = []
    for opts, spec, module, backend, out_dir in plans:
        console.info(f"== {module.name}:{backend}@{spec.cni.version or module.default_release}")
        summaries.append(pipeline.execute(pipeline.start(provider, spec, module, backend,
                                                         opts, out_dir)))
    dest = Path(plans[0][4]) / f"compare-{summaries[0]['run_id']}"
    files = render_compare(summaries, dest)
    doc = {"runs": [s["run_id"] for s in summaries], "report": str(files["html"])}
    if as_json:
        _print_json(doc)
    else:
        console.out.print(f"comparison report: {files['html']}")


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
    from testbed.run.options import default_out

    if bool(run_id) == bool(last):
        raise UserError("give a RUN_ID or --last N (one of them)")
    store = Store(db) if db else Store()
    if run_id:
        summary = store.get(run_id)
        if summary is None:
            raise UserError(f"no stored run {run_id!r}: see `python -m testbed report --last 5`")
        files = render_run(summary, Path(out) if out else Path(summary.get("run_dir")
                                                                 or default_out() / run_id))
    else:
        assert last is not None
        if last < 1:
            raise UserError(f"--last {last}: give a positive number of runs")
        runs = store.last(last)
        if not runs:
            raise UserError("no runs stored yet: start one with `python -m testbed run flannel`")
        files = render_many(runs, Path(out) if out else default_out() / "reports")
    console.out.print(f"report: {files['html']}")


def main() -> None:
    """Console entry point: click's usage errors become one line and exit 2."""
    try:
        cli.main(prog_name="python -m testbed", standalone_mode=False)
    except click.exceptions.Abort:
        console.fail("interrupted")
        sys.exit(130)
    except click.ClickException as e:
        console.fail(e.format_message().replace("\n", " "))
        sys.exit(2)
