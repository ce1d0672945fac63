"""Console output: kind-style status lines around long steps, tables, one-line errors."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.text import Text

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


@contextmanager
def step(title: str) -> Iterator[None]:
    """Show ` • title ...` while a step runs, then ` ✓ title (1.2s)` or ` ✗ title`."""
    start = time.monotonic()
    title = escape(title)  # names and paths in a title are text, never markup
    if err.is_terminal:
        with err.status(f" • {title} ..."):
            try:
                yield
            except BaseException:
                err.print(f" [red]✗[/red] {title}")
                raise
    else:
        # Plain writes, unwrapped: one line each for logs and for whoever reads the progress,
        # and nothing half-buffered if a Ctrl-C lands mid-write.
        _line(f" • {title} ...")
        try:
            yield
        except BaseException:
            _line(f" ✗ {title}")
            raise
        _line(f" ✓ {title} ({time.monotonic() - start:.1f}s)")
        return
    err.print(f" [green]✓[/green] {title} ({time.monotonic() - start:.1f}s)")


def _line(text: str) -> None:
    sys.stderr.write(text + "\n")  # one write: a Ctrl-C cannot split the line from its end
    sys.stderr.flush()


def info(message: str) -> None:
    """A progress or status line on stderr (stdout stays clean for --json)."""
    err.print(message, markup=False, highlight=False)


def progress(detail: str) -> None:
    """A sub-line under the current step (e.g. a build step)."""
    if err.is_terminal:
        err.print(f"   [dim]{escape(detail)}[/dim]")
    else:
        print(f"   {detail}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    """The one-line error a user acts on, printed verbatim (never read as markup)."""
    line = Text("ERROR:", style="red") + Text(" " + " ".join(message.splitlines()))
    err.print(line, soft_wrap=True, markup=False, highlight=False)
