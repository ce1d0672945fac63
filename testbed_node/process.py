"""A pod's processes: whether a recorded pid is still ours, stopping it, its log, its health."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from testbed_node import AgentError, netns

STOP_GRACE = 5.0


class PodError(AgentError):
    """A pod operation that could not be done."""


def start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks (field 22 of /proc/PID/stat); None if gone or zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def owned(container: dict[str, Any], ns_path: str) -> bool:
    """Whether the recorded pid is still this pod's process (same start time, same netns)."""
    pid = container.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        return False
    ticks = start_ticks(pid)
    if ticks is None or ticks != container.get("start_ticks"):
        return False
    return not os.path.exists(ns_path) or netns.pid_in(pid, ns_path)


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop(container: dict[str, Any], ns_path: str) -> str:
    """Stop one recorded process: 'stopped', 'killed' or 'gone' (never touches other pids)."""
    if not owned(container, ns_path):
        return "gone"
    pid = int(container["pid"])
    for sig, grace, outcome in ((signal.SIGTERM, STOP_GRACE, "stopped"),
                                (signal.SIGKILL, 2.0, "killed")):
        signal_group(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaps it when the agent itself is the parent
            if start_ticks(pid) != container.get("start_ticks"):
                return outcome
            time.sleep(0.05)
    raise PodError(f"process {pid} ({container.get('name')}) survived SIGKILL")


def log_tail(path: str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(ln for ln in text.splitlines()[-lines:] if ln.strip())


def http_ready(ns_path: str, port: int) -> bool:
    """GET /healthz on 127.0.0.1:port from inside the pod answers 200."""
    sock = netns.socket_in(ns_path)
    try:
        sock.settimeout(1.0)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        head = sock.recv(64)
    except OSError:
        return False
    finally:
        sock.close()
    return head.startswith(b"HTTP/1.") and head[9:12] == b"200"
