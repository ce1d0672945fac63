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

    return wrapper  # type: ignore[return-value]


def _print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def _provider() -> Any:
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
@click.option("--cni", "cni_name", default=None, help="Only this CNI's images.")
@click.option("--build", "build", type=click.Choice(["reference", "upstream"]),
              default="reference", show_default=True)
@_errors
def images_build(cni_name: str | None, build: str) -> None:
    """Build the base rootfs and role images from Debian packages (cached by content hash)."""
    from testbed import images as imgs
    from testbed.provider.docker import connect

    if cni_name:
        cnis.parse(cni_name)
    if build == "upstream":
        raise UserError("upstream images are not built here: load them with "
                        "`python -m testbed images load FILE.tar`")
    client = connect()
    tags = imgs.ensure(client, imgs.for_cni(cni_name.split(":")[0] if cni_name else None))
    for name, tag in tags.items():
        console.info(f" {name:32} {tag}")


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
@_errors
def images_list(as_json: bool) -> None:
    """Show each image: reference builds and upstream references, present or not."""
    from testbed.images.inventory import inventory

    rows = inventory()
    if as_json:
        _print_json(rows)
        return
    table = Table("image", "kind", "cni", "reference", "present")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["cni"] or "-", r["ref"],
                      "yes" if r["present"] else "no")
    console.out.print(table)


@images.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@_errors
def images_load(file: str) -> None:
    """Load upstream images from a `docker save` tarball (air-gapped users)."""
    from testbed.images.inventory import load

    for tag in load(Path(file)):
        console.info(f" loaded {tag}")


@cli.command()
@click.argument("scenario", required=False)
@click.option("--cni", "cni_value", default=None, help="NAME[:BACKEND], e.g. flannel:host-gw")
@click.option("--nodes", type=int, default=None, help=f"{MIN_NODES}-{MAX_NODES}")
@click.option("--name", default=DEFAULT_CLUSTER, show_default=True)
@click.option("--build", type=click.Choice(["auto", "upstream", "reference"]), default=None)
@click.option("--retain", is_flag=True, help="Keep what was created if `up` fails.")
@_errors
def up(scenario: str | None, cni_value: str | None, nodes: int | None, name: str,
       build: str | None, retain: bool) -> None:
    """Create a cluster: etcd, N nodes, the CNI's daemons, and the scenario's pods."""
    from testbed.cluster.model import validate_name
    from testbed.lifecycle.create import up as create

    validate_name(name)
    spec, module, backend = _scenario(scenario, cni_value, nodes, build)
    ctx = create(_provider(), spec, name, module, backend, retain=retain)
    assert ctx.selection is not None
    console.info(f"Cluster {name!r} is up: {len(ctx.nodes)} nodes, {module.name} ({backend}, "
                 f"{ctx.selection.build} build), {len(ctx.pods)} pods. "
                 f"Next: `python -m testbed check{'' if name == DEFAULT_CLUSTER else ' ' + name}`")


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
        name, _, backend = cni_value.partition(":")
        if name != spec.cni.name:
            spec.cni.images = {}
        spec.cni.name, spec.cni.backend = name, backend or None
    if build:
        spec.cni.build = build  # type: ignore[assignment]
    label = spec.cni.name + (f":{spec.cni.backend}" if spec.cni.backend else "")
    module, backend = cnis.parse(label)
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
                      f"{doc['build']} build")
    table = Table("node", "ip", "state", "cni daemons", "pod cidr", "pods")
    for n in doc["nodes"]:
        daemons = ", ".join(f"{d['name']} {d['state']}" for d in n["cni_daemons"]) or "-"
        table.add_row(n["name"], n["ip"] or "-", n["state"], daemons, n.get("pod_cidr") or "-",
                      str(len(n.get("pods", []))))
    console.out.print(table)


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
    table = Table("name", "cni", "backend", "build", "nodes", "containers running")
    for r in rows:
        table.add_row(r["name"], r["cni"], r["backend"], r["build"], str(r["nodes"]),
                      f"{r['running']}/{r['containers']}")
    console.out.print(table)


@cli.command()
@click.argument("name", required=False, default=DEFAULT_CLUSTER)
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", type=click.Path(dir_okay=False), default=None)
@_errors
def check(name: str, as_json: bool, junit: str | None) -> None:
    """Run the connectivity matrix from inside pods; exit 1 if any case fails."""
    from testbed.check import junit as junit_xml
    from testbed.check.matrix import report, run
    from testbed.cluster.model import find

    provider = _provider()
    cluster = find(provider, name)
    doc = report(cluster, run(provider, cluster))
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
    failed = [c for c in doc["cases"] if c["status"] == "fail"]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(doc['cases'])} cases failed; first: "
                          f"{failed[0]['path']} {failed[0]['src']} -> {failed[0]['dst']}: "
                          f"{failed[0]['reason']}")


@cli.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Every testbed cluster.")
@_errors
def down(name: str | None, all_: bool) -> None:
    """Remove a cluster's containers, networks and volumes (found by label)."""
    provider = _provider()
    if all_ and name:
        raise UserError("give a cluster NAME or --all, not both")
    names = provider.clusters() if all_ else [name or DEFAULT_CLUSTER]
    if not all_ and names[0] not in provider.clusters():
        console.info(f"no cluster named {names[0]!r}; nothing to remove")
        return
    for n in names:
        with console.step(f"Deleting cluster {n}"):
            provider.delete_cluster(n)


def main() -> None:
    """Console entry point."""
    cli(prog_name="python -m testbed")
