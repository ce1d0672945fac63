"""Crash-safe file writes: files and directories replaced atomically, logs synced per line."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _sync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry itself reaches the disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
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
    _sync_dir(path.parent)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` (UTF-8) atomically; see write_bytes."""
    write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def staged_dir(dest: Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty directory beside `dest`; on success it becomes `dest` in one rename.

    With replace=False an existing `dest` (another process finished first) is kept. On an
    error the staging directory is removed and `dest` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield staging
        if replace:
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
        else:
            with contextlib.suppress(OSError):  # a concurrent writer got there first: keep it
                staging.rename(dest)
        _sync_dir(dest.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def append_line(path: Path, line: str) -> None:
    """Append one line and make it durable before returning."""
    with path.open("a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())
