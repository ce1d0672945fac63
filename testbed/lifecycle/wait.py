"""One timeout policy and one polling loop for every readiness wait, with logs on timeout."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TypeVar

from testbed.cluster.agent import probe_from
from testbed.errors import StepError, UserError
from testbed.provider.base import ContainerInfo, Provider

T = TypeVar("T")
R = TypeVar("R")

SCALE_ENV = "TESTBED_TIMEOUT_SCALE"


@dataclass(frozen=True)
class Timeouts:
    """Every readiness wait's limit in seconds, by name (`$TESTBED_TIMEOUT_SCALE` stretches
    them all on a slow machine)."""

    etcd: float = 30.0  # etcd answers its health check
    cni: float = 90.0  # a node's CNI has written its files and passes its own check
    services: float = 45.0  # each node's service rules match the registry
    edge: float = 30.0  # the ingress and the internet's echo server answer
    locust: float = 60.0  # `run --web`: every Locust worker has joined the master
    init_container: float = 60.0  # a one-shot (init) container runs to completion
    cni_probe: float = 30.0  # a CNI's own one-shot probe container (weave's kernel check)
    doctor: float = 60.0  # one `doctor` probe container

    @classmethod
    def from_env(cls) -> Timeouts:
        """The defaults, scaled by `$TESTBED_TIMEOUT_SCALE` (a positive number, default 1)."""
        raw = os.environ.get(SCALE_ENV, "").strip() or "1"
        try:
            scale = float(raw)
        except ValueError:
            scale = 0.0
        if not scale > 0:
            raise UserError(f"{SCALE_ENV}={raw!r} is not a positive number (e.g. 2 doubles "
                            "every readiness timeout)")
        base = cls()
        return cls(**{f.name: getattr(base, f.name) * scale for f in fields(cls)})


TIMEOUTS = Timeouts.from_env()

# Set by the first Ctrl-C of a lifecycle: every poll stops, and worker threads end early.
CANCELLED = threading.Event()


def until(check: Callable[[], bool], timeout: float, what: str,
          logs: Callable[[], str] | None = None, interval: float = 0.25,
          max_interval: float = 0.0) -> float:
    """Poll `check` until true; return seconds waited, or raise naming `what` with logs.

    With `max_interval`, the pause doubles after each miss up to it (a costly check, e.g. a
    `docker exec` per node, then loads a busy machine less the longer the wait).
    A cancelled lifecycle (Ctrl-C) stops the poll at once.
    """
    start = time.monotonic()
    while True:
        if CANCELLED.is_set():
            raise StepError(f"cancelled while waiting for {what}")
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            detail = f"\n--- last logs ---\n{logs().rstrip()}" if logs else ""
            raise StepError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)
        if max_interval > interval:
            interval = min(2 * interval, max_interval)


@dataclass(frozen=True)
class Poll:
    """A container's readiness: `check(provider)` polled under one of the named timeouts, the
    logs of `logs_of` (default: the container itself) attached when it times out."""

    check: Callable[[Provider], bool]
    what: str
    timeout: str = "edge"
    logs_of: str = ""
    interval: float = 0.25

    def wait(self, provider: Provider, container: ContainerInfo) -> None:
        """Block until ready, or raise a StepError naming what and its last logs."""
        source = self.logs_of or container.name
        until(lambda: self.check(provider), getattr(TIMEOUTS, self.timeout), self.what,
              lambda: provider.logs(source), self.interval)


@dataclass(frozen=True)
class Exec:
    """A container's readiness as a command that succeeds (and prints `expect`, if given),
    run in `where` (default: the container itself)."""

    argv: tuple[str, ...]
    what: str
    where: str = ""
    expect: str | None = None
    timeout: str = "edge"

    def wait(self, provider: Provider, container: ContainerInfo) -> None:
        """Block until the command succeeds, or raise naming what and the container's logs."""
        where = self.where or container.name

        def ok(p: Provider) -> bool:
            res = p.exec(where, list(self.argv))
            if self.expect is not None:
                return res.stdout.strip() == self.expect
            return res.exit_code == 0

        Poll(ok, self.what, self.timeout, container.name).wait(provider, container)


@dataclass(frozen=True)
class Http:
    """A container's readiness as an HTTP answer with `status`, asked by the agent's probe
    from `where`'s network namespace (default: the container itself)."""

    url: str
    what: str
    where: str = ""
    status: int = 200
    timeout: str = "edge"

    def wait(self, provider: Provider, container: ContainerInfo) -> None:
        """Block until the URL answers `status`, or raise naming what and the logs."""
        where = self.where or container.name
        Poll(lambda p: probe_from(p, where, self.url)["status"] == self.status, self.what,
             self.timeout, container.name).wait(provider, container)


_live: set[ThreadPoolExecutor] = set()
_live_lock = threading.Lock()


@contextmanager
def pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, on Ctrl-C, cancels what has not started and returns at once
    (`drain()` later waits for what was still running: the rollback does); on an error it
    cancels what has not started and waits for the rest, as on success."""
    executor = ThreadPoolExecutor(max_workers=max(1, workers))
    with _live_lock:
        _live.add(executor)
    try:
        yield executor
    except BaseException as e:
        if not isinstance(e, Exception) or CANCELLED.is_set():
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True, cancel_futures=True)
        _forget(executor)
        raise
    executor.shutdown(wait=True)
    _forget(executor)


def _forget(executor: ThreadPoolExecutor) -> None:
    with _live_lock:
        _live.discard(executor)


def drain() -> None:
    """Wait for every worker thread an interrupted pool left running."""
    with _live_lock:
        pending = list(_live)
        _live.clear()
    for executor in pending:
        executor.shutdown(wait=True)


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int = 8) -> list[R]:
    """Map `fn` over items in threads; the first exception propagates."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with pool(min(workers, len(items))) as ex:
        return list(ex.map(fn, items))
