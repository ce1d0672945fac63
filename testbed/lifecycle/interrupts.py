"""Ctrl-C while a cluster is owned: the first one interrupts, the cleanup it starts cannot be."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from testbed.lifecycle.wait import CANCELLED


@dataclass
class _State:
    depth: int = 0
    shielded: bool = False  # Ctrl-C is ignored (cleanup is running, or about to)
    noted: bool = False
    name: str = ""
    previous: Any = None


_state = _State()


def note(name: str) -> str:
    """The one line a Ctrl-C during cleanup prints (once)."""
    return (f"testbed: still removing cluster {name}; Ctrl-C is ignored until it is gone "
            f"(if this process is killed, finish with: python -m testbed down {name})")


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.shielded:
        if not _state.noted:
            _state.noted = True
            # Straight to the descriptor: the handler may run in the middle of a console
            # write, and the console is not re-entrant.
            os.write(2, (note(_state.name) + "\n").encode())
        return
    # From the first Ctrl-C on, whatever cleans up after it runs to the end.
    _state.shielded = True
    CANCELLED.set()
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def guard(name: str) -> Iterator[None]:
    """While a cluster is owned: the first Ctrl-C raises KeyboardInterrupt and cancels every
    wait; any later one, until the outermost guard ends, is ignored with one note."""
    if not _main_thread():  # signals reach the main thread only
        yield
        return
    if _state.depth == 0:
        _state.previous = signal.signal(signal.SIGINT, _handler)
        _state.name, _state.shielded, _state.noted = name, False, False
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            signal.signal(signal.SIGINT, _state.previous or signal.default_int_handler)
            _state.shielded, _state.noted = False, False
            CANCELLED.clear()


@contextmanager
def shield(name: str) -> Iterator[None]:
    """Ctrl-C is ignored (with one note) while the block runs: a rollback or `down` finishes."""
    with guard(name):
        before, _state.shielded = _state.shielded, True
        _state.name = name
        try:
            yield
        finally:
            _state.shielded = before
