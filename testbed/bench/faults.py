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
from testbed.paths import SCENARIOS_DIR

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


def rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per played fault: CNI, path, fault, then COLUMNS."""
    cni = f"{summary.get('cni')}:{summary.get('backend')}"
    out = []
    for path, played in (summary.get("faults") or {}).items():
        ts = [r for r in summary.get("timeseries") or [] if r.get("path") == path]
        for f in with_recovery(played, ts):  # again, with this tree's metrics
            out.append([cni, path, str(f.get("fault")),
                        *("-" if f.get(c) is None else f"{f[c]:g}" for c in COLUMNS)])
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
    head = ["cni", "path", "fault", *COLUMNS]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for s in summaries:
        for r in rows(s):
            print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
