"""Benchmarks whose numbers go in the README and closing notes (never timed assertions)."""

import os
import subprocess
import sys
import time


def timed_cli(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds one `python -m testbed ...` took; its stderr tail if it failed."""
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "testbed", *argv], capture_output=True,
                         text=True, env={**os.environ, **(env or {})})
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"`testbed {' '.join(argv)}` failed:\n{res.stderr[-2000:]}")
    return took

