"""Scheduling a night: a systemd user timer and service, a cron line, and JUnit output."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from testbed.check import junit
from testbed.errors import UserError
from testbed.nightly.analyze import Analysis
from testbed.nightly.report import verdict_word
from testbed.results.atomic import write_text

UNIT = "testbed-nightly"
AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _at(at: str) -> tuple[int, int]:
    m = AT.match(at)
    if not m:
        raise UserError(f"--at {at!r}: not a time of day; allowed: HH:MM (24 h), e.g. 02:00")
    return int(m[1]), int(m[2])


def command(matrix: Path | None, db: str | None, junit_file: str | None = None) -> list[str]:
    """The nightly command line a scheduler runs (this Python, absolute paths)."""
    cmd = [sys.executable, "-m", "testbed", "nightly"]
    if matrix is not None:
        cmd += ["--matrix", str(matrix.absolute())]
    if db:
        cmd += ["--db", str(Path(db).absolute())]
    if junit_file:
        cmd += ["--junit", str(Path(junit_file).absolute())]
    return cmd


def _environment() -> list[str]:
    keep = ("PYTHONPATH", "TESTBED_DB", "TESTBED_DATA", "TESTBED_CACHE", "TESTBED_RUNS", "PATH")
    return [f'Environment="{k}={os.environ[k]}"' for k in keep if os.environ.get(k)]


def units(cmd: list[str], at: str, workdir: Path) -> dict[str, str]:
    """`testbed-nightly.service` (one night) and `testbed-nightly.timer` (daily at `at`)."""
    hour, minute = _at(at)
    service = "\n".join([
        "[Unit]", "Description=testbed nightly CNI comparison", "",
        "[Service]", "Type=oneshot", f"WorkingDirectory={workdir.absolute()}",
        *_environment(), f"ExecStart={shlex.join(cmd)}",
        # exit 1 = a regression was flagged: the night ran, so not a failed unit
        "SuccessExitStatus=1", ""])
    timer = "\n".join([
        "[Unit]", "Description=Run the testbed nightly every day", "",
        "[Timer]", f"OnCalendar=*-*-* {hour:02d}:{minute:02d}:00", "Persistent=true",
        "RandomizedDelaySec=300", "", "[Install]", "WantedBy=timers.target", ""])
    return {f"{UNIT}.service": service, f"{UNIT}.timer": timer}


def user_unit_dir() -> Path:
    """Where systemd looks for a user's units."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def install(cmd: list[str], at: str, unit_dir: Path, workdir: Path) -> list[Path]:
    """Write the two units into `unit_dir` (enabling them is the user's `systemctl` call)."""
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--unit-dir {unit_dir}: cannot create it ({e.strerror}); allowed: a "
                        "folder you can write to") from e
    out = []
    for name, text in units(cmd, at, workdir).items():
        write_text(unit_dir / name, text)
        out.append(unit_dir / name)
    return out


def cron_line(cmd: list[str], at: str, workdir: Path, log: Path) -> str:
    """A crontab line running the night daily at `at`, its output appended to `log`."""
    hour, minute = _at(at)
    return (f"{minute} {hour} * * * cd {shlex.quote(str(workdir.absolute()))} && "
            f"{shlex.join(cmd)} >> {shlex.quote(str(log))} 2>&1")


def write_junit(a: Analysis, path: Path) -> None:
    """One testcase per series and metric (classname = series), failed on a regression,
    skipped when not judged; through the same writer as `check --junit`."""
    cases = []
    for r in a.rows:
        status = ("fail" if r.judged and r.verdict.flagged else
                  "pass" if r.judged and r.verdict.status in ("ok", "improved") else "skip")
        reason = r.verdict.reason if status != "pass" else ""
        if status == "skip" and not r.judged:
            reason = verdict_word(r)
        cases.append({"path": r.series, "src": r.key,
                      "dst": f"previous {a.rule.baseline_nights} nights", "status": status,
                      "reason": reason + ("; environment: " + "; ".join(r.env_changes)
                                          if r.env_changes else ""), "latency_ms": 0.0})
    junit.write({"cni": "nightly", "backend": a.last.nightly_id, "cases": cases}, path)
