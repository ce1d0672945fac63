"""`up`, `status`, `list`, `check` and `down`: one cluster's life."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from testbed import cni as cnis
from testbed import console
from testbed.cli.base import _errors, _print_json, _provider, cli
from testbed.constants import DEFAULT_CLUSTER, MAX_NODES, MIN_NODES
from testbed.errors import CheckFailed, UserError
from testbed.validation import check_images


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
    overrides = parse_images(image_overrides)
    if overrides:
        from testbed.cni.select import check_overrides

        spec.cni.images.update(overrides)
        check_overrides(module, spec.cni.images)
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
    try:
        check_images(out, "--image ")
    except ValueError as e:
        raise UserError(str(e)) from None
    return out


def _scenario(path: str | None, cni_value: str | None, nodes: int | None,
              build: str | None) -> tuple[Any, cnis.Cni, str]:
    """Load a scenario and apply command-line overrides, validating everything first."""
    from testbed import scenario as sc

    spec = sc.load(path)
    if nodes is not None:
        if not MIN_NODES <= nodes <= MAX_NODES:
            raise UserError(f"--nodes {nodes} is out of range; allowed: {MIN_NODES} to {MAX_NODES}")
        spec.nodes = nodes
    if cni_value is not None:  # '' is refused by parse, never read as the default
        module, _, version = cnis.parse(cni_value)
        backend = cni_value.partition("@")[0].partition(":")[2]
        if module.name != spec.cni.name:
            spec.cni.images, spec.cni.version, spec.cni.module = {}, None, None
        spec.cni.name, spec.cni.backend = module.name, backend or None
        if version:
            spec.cni.version = version
    if build:
        spec.cni.build = build  # type: ignore[assignment]
    spec = sc.revalidate(spec, f"{path or 'the default scenario'} with the command-line options")
    label = spec.cni.name + (f":{spec.cni.backend}" if spec.cni.backend else "")
    try:
        module, backend, _ = cnis.parse(label)
    except UserError as e:  # the scenario's own cni.name or cni.backend
        raise UserError(f"{path or 'the default scenario'}: cni: {e}".replace(
            ": choose one of ", "; allowed: ")) from None
    return spec, module, backend


@cli.command()
@click.argument("name", required=False, default=DEFAULT_CLUSTER)
@click.option("--json", "as_json", is_flag=True)
@_errors
def status(name: str, as_json: bool) -> None:
    """Per node: state, CNI daemons, pod CIDR, pods."""
    from testbed.cluster.model import validate_name
    from testbed.lifecycle.inspect import status as read

    validate_name(name)
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
@click.option("--junit", default=None, metavar="FILE", help="Also write JUnit XML here.")
@click.option("--spread", "with_spread", is_flag=True,
              help="Also count requests per endpoint through a ClusterIP against 1/n.")
@_errors
def check(name: str, as_json: bool, junit: str | None, with_spread: bool) -> None:
    """Run the connectivity matrix from inside pods; exit 1 if any case fails."""
    from testbed.check import junit as junit_xml
    from testbed.check.matrix import report, run
    from testbed.cluster.model import find, validate_name

    validate_name(name)
    if junit is not None and ("\0" in junit or not junit.strip() or Path(junit).is_dir()):
        raise UserError(f"--junit {junit!r}: not a file name; allowed: a path to an XML file")
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
    from testbed.cluster.model import validate_name

    if all_ and name is not None:
        raise UserError("give a cluster NAME or --all, not both")
    if name is not None:
        validate_name(name)  # '' or blank is refused, never read as the default or as --all
    provider = _provider()
    names = select(provider, name, all_, prefix)
    if not names and not all_:
        console.info(f"no cluster named {name or DEFAULT_CLUSTER!r}; nothing to remove")
    teardown(provider, names)
