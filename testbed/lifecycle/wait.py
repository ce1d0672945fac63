"""One polling loop for every readiness check, with logs attached to the timeout error."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from testbed.errors import StepError

T = TypeVar("T")
R = TypeVar("R")


def until(check: Callable[[], bool], timeout: float, what: str,
          logs: Callable[[], str] | None = None, interval: float = 0.25) -> float:
    """Poll `check` until true; return seconds waited, or raise naming `what` with logs."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            detail = f"\n--- last logs ---\n{logs().rstrip()}" if logs else ""
            raise StepError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int = 8) -> list[R]:
    """Map `fn` over items in threads; the first exception propagates."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))
