"""The command line: `python -m testbed doctor|images|up|status|list|check|down|run|fault ...`."""

from __future__ import annotations

import sys

import click

from testbed import console
from testbed.cli import cluster, faults, images, nightly, run
from testbed.cli.base import cli

__all__ = ["cli", "cluster", "faults", "images", "main", "nightly", "run"]


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
