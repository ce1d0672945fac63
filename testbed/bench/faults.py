"""`python -m testbed.bench.faults [--cnis flannel,calico]`: `run` with scenarios/faults.yaml per
CNI, then one table of each fault's recovery figures (or `--from FILE...` run summaries)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from testbed.faults.play import with_recovery
from testbed.load.locust import ERRORS_FILE
from testbed.paths import SCENARIOS_DIR
from testbed.reports.faults import kinds_text

COLUMNS = ("failed_share", "throughput_drop", "first_failure_s", "first_success_after_s",
           "last_failure_after_s", "p95_back_s", "control_plane_s", "apply_s", "undo_s")


def run(cni: str, out: Path) -> dict[str, Any]:
    """One `run CNI --scenario faults.yaml --json`; its summary."""
    res = subprocess.run([sys.executable, "-m", "testbed", "run", cni, "--scenario",
                          str(SCENARIOS_DIR / "faults.yaml"), "--out", str(out), "--db",
                          str(out / "results.sqlite"), "--json"], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise SystemExit(f"run {cni} failed: {res.stderr.strip().splitlines()[-1:]}")
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _same(a: Any, b: Any) -> bool:
    """The same trial (a summary stored before trials has none)."""
    return a is None or b is None or a == b


def _errors(summary: dict[str, Any], path: str, trial: Any) -> list[dict[str, Any]] | None:
    """The trial's failed requests per second and kind, None without per-second counts."""
    for e in (summary.get("errors") or {}).get(path) or []:
        if _same(e.get("trial"), trial) and e.get("from") == ERRORS_FILE:
            return list(e.get("rows") or [])
    return None


def rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per played fault: CNI, path, fault, then COLUMNS and its error kinds."""
    cni = f"{summary.get('cni')}:{summary.get('backend')}"
    out = []
    for path, played in (summary.get("faults") or {}).items():
        for trial in dict.fromkeys(f.get("trial") for f in played):
            ts = [r for r in summary.get("timeseries") or [] if r.get("path") == path
                  and _same(r.get("trial"), trial)]
            docs = [f for f in played if _same(f.get("trial"), trial)]
            # again, with this tree's metrics
            for f in with_recovery(docs, ts, _errors(summary, path, trial)):
                out.append([cni, path, str(f.get("fault")),
                            *("-" if f.get(c) is None else f"{f[c]:g}" for c in COLUMNS),
                            kinds_text(f.get("error_kinds")) or "-"])
    return out


def main(argv: list[str] | None = None) -> int:
    """Run (or read) and print the table as Markdown."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.faults")
    ap.add_argument("--cnis", default="flannel:vxlan,calico:bgp")
    ap.add_argument("--from", dest="files", nargs="*", default=None,
                    help="summary JSON files (`run --json` output) instead of running")
    args = ap.parse_args(argv)
    if args.files:
        summaries = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.files]
    else:
        out = Path(tempfile.mkdtemp(prefix="testbed-bench-faults-"))
        summaries = [run(c, out) for c in args.cnis.split(",")]
    head = ["cni", "path", "fault", *COLUMNS, "error_kinds"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for s in summaries:
        for r in rows(s):
            print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
