"""Crash-safe writes of the host: directories replaced atomically, logs synced per line; single
files through testbed_contract.atomic (re-exported here)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from testbed_contract.atomic import sync_dir, write_bytes, write_text

__all__ = ["append_line", "staged_dir", "write_bytes", "write_text"]


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
        sync_dir(dest.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def append_line(path: Path, line: str) -> None:
    """Append one line and make it durable before returning."""
    with path.open("a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())
