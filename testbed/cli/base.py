"""The click group every command registers on, the error wrapper and shared helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from testbed import console
from testbed.errors import TestbedError
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

