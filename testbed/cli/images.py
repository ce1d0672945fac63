"""`doctor` and `images build|list|load`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from testbed import cni as cnis
from testbed import console
from testbed.cli.base import _errors, _print_json, _provider, cli
from testbed.errors import UserError


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
    if cni_name is not None:
        cnis.parse(cni_name)  # '' is refused, never read as every CNI
    specs = source_specs((cni_name,) if cni_name is not None else ())
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
@click.argument("file", metavar="FILE")  # checked below: click.Path crashes on NUL
@_errors
def images_load(file: str) -> None:
    """Load upstream images from a `docker save` tarball (air-gapped users)."""
    from testbed.cni.inventory import load

    if "\0" in file or not file.strip():
        raise UserError(f"{file!r} is not a file name; allowed: a tarball made by `docker save`")
    for tag in load(_provider().images, Path(file)):
        console.info(f" loaded {tag}")
