"""Crash-safe file writes both sides use: a temporary file beside the target, then one rename.

Standard library only: the node agent writes its state with it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def sync_dir(directory: Path) -> None:
    """fsync a directory, so a rename in it is durable."""
    # The rename is durable only once the directory entry itself reaches the disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader sees the old file or the new one, never a torn one."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_dir(path.parent)


def write_text(path: str | Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` (UTF-8) atomically; see write_bytes."""
    write_bytes(path, text.encode("utf-8"), mode)
