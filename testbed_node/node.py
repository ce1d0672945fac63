"""Node chores: plugin links and state dirs at start-up, and waiting for a usable CNI config."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from testbed_contract import atomic
from testbed_node import cni, netns, pods

DEBIAN_PLUGIN_DIR = "/usr/lib/cni"
STATE_DIRS = (netns.NETNS_DIR, pods.STATE_DIR, pods.LOG_DIR, cni.DEFAULT_CACHE_DIR)


def setup(bin_dir: str = cni.DEFAULT_CNI_PATH, source: str = DEBIAN_PLUGIN_DIR,
          dirs: tuple[str, ...] = STATE_DIRS) -> dict[str, Any]:
    """Link Debian's plugins into bin_dir (never replacing a CNI's own) and make state dirs."""
    made = []
    for d in (bin_dir, *dirs):
        if not os.path.isdir(d):
            os.makedirs(d, exist_ok=True)
            made.append(d)
    linked, kept = [], []
    src = Path(source)
    for plugin in sorted(src.iterdir()) if src.is_dir() else []:
        if not (plugin.is_file() and os.access(plugin, os.X_OK)):
            continue
        dest = Path(bin_dir, plugin.name)
        try:  # a CNI's init container may be writing the same directory right now
            dest.symlink_to(plugin)
        except FileExistsError:
            kept.append(plugin.name)
            continue
        linked.append(plugin.name)
    return {"bin_dir": bin_dir, "source": source, "linked": linked, "kept": kept,
            "created_dirs": made}


def boot(log: str, bin_dir: str = cni.DEFAULT_CNI_PATH) -> None:
    """A node container's command: the start-up chores, their result (or error) as JSON in
    `log`, then `sleep infinity` in this process's place (the node stays up either way)."""
    try:
        doc: dict[str, Any] = setup(bin_dir=bin_dir)
    except Exception as e:  # the host reads the reason from the log
        doc = {"error": f"{type(e).__name__}: {e}"}
    atomic.write_text(log, json.dumps(doc))
    os.execvp("sleep", ["sleep", "infinity"])


def readiness(conf_dir: str, paths: list[str], files: tuple[str, ...] = ()) -> dict[str, Any]:
    """One look: the CNI daemon's files are written, there is a configuration, and every
    plugin it names is executable."""
    absent = [f for f in files if not _non_empty(f)]
    try:
        netconf = cni.load_dir(conf_dir)
    except cni.CniError as e:
        return {"ready": False, "conf": None, "network": None, "missing": [],
                "missing_files": absent, "reason": str(e)}
    missing = [t for t in netconf.plugin_types() if cni.find_plugin(t, paths) is None]
    reason = "; ".join(
        ([f"plugins not in {os.pathsep.join(paths)}: {', '.join(missing)}"] if missing else [])
        + ([f"not written yet: {', '.join(absent)}"] if absent else []))
    return {"ready": not (missing or absent), "conf": netconf.source, "network": netconf.name,
            "cni_version": netconf.cni_version, "plugins": netconf.plugin_types(),
            "missing": missing, "missing_files": absent, "reason": reason}


def _non_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def wait_ready(conf_dir: str, paths: list[str], timeout: float, files: tuple[str, ...] = (),
               interval: float = 0.05) -> dict[str, Any]:
    """Poll `readiness` until ready or `timeout` seconds passed."""
    start = time.monotonic()
    while True:
        state = readiness(conf_dir, paths, files)
        waited = time.monotonic() - start
        if state["ready"] or waited >= timeout:
            state["waited_s"] = round(waited, 2)
            return state
        time.sleep(min(interval, max(0.0, timeout - waited)))
