"""Active faults and how to undo them, in a file under the data dir (survives a killed process)."""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from testbed.paths import data_dir
from testbed_contract.atomic import write_text

_LOCK = threading.Lock()  # a run's timeline thread and its main thread share the file


def state_file(cluster: str) -> Path:
    """`<data dir>/faults/<cluster>.json` (`$TESTBED_DATA` moves it with the data dir)."""
    folder = data_dir() / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{cluster}.json"


def new_id() -> str:
    """A short id for one fault (iptables chain names take it: at most 28 characters)."""
    return uuid.uuid4().hex[:8]


def load(cluster: str) -> list[dict[str, Any]]:
    """Every fault recorded as active on this cluster, oldest first."""
    path = state_file(cluster)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return []
    return list(doc.get("faults") or [])


def _save(cluster: str, faults: list[dict[str, Any]]) -> None:
    path = state_file(cluster)
    if not faults:
        path.unlink(missing_ok=True)
        return
    write_text(str(path), json.dumps({"cluster": cluster, "faults": faults}, indent=2) + "\n")


def put(cluster: str, record: dict[str, Any]) -> None:
    """Add or replace one fault's record (by its `id`), before its effect is applied."""
    with _LOCK:
        faults = [f for f in load(cluster) if f.get("id") != record["id"]]
        _save(cluster, [*faults, {**record, "pid": os.getpid()}])


def drop(cluster: str, fault_id: str) -> None:
    """Forget one fault once it is undone."""
    with _LOCK:
        _save(cluster, [f for f in load(cluster) if f.get("id") != fault_id])


def forget(cluster: str) -> None:
    """Forget every fault of a cluster (after `down` removed it)."""
    with _LOCK:
        _save(cluster, [])
