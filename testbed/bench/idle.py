"""`python -m testbed.bench.idle`: idle CPU and memory of each CNI daemon, from cgroup counters.

Per CNI: `up` the bench scenario, let it settle, then read each CNI container's CPU counter
twice, `--seconds` apart (a rate over the window, not one snapshot), and its memory.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from testbed.bench import timed_cli
from testbed.provider.docker import DockerProvider


def measure(cni: str, settle: float, seconds: float) -> list[dict[str, Any]]:
    """One cluster of `cni`: per CNI daemon, CPU % of one core over the window, MiB."""
    provider = DockerProvider()
    name = f"idle-{uuid.uuid4().hex[:6]}"
    timed_cli(["up", "bench", "--cni", cni, "--name", name])
    try:
        time.sleep(settle)
        daemons = [c.name for c in provider.containers(cluster=name, role="cni")
                   if c.status == "running"]
        first = {c: provider.stats(c) for c in daemons}
        start = time.monotonic()
        time.sleep(seconds)
        last = {c: provider.stats(c) for c in daemons}
        window = time.monotonic() - start
        return [{"cni": cni, "container": c,
                 "cpu_pct": round(100 * (last[c].cpu_s - first[c].cpu_s) / window, 2),
                 "mem_mib": last[c].mem_mib} for c in daemons]
    finally:
        timed_cli(["down", name])


def main() -> None:
    """Print one line per CNI daemon (JSON with --json)."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.idle")
    ap.add_argument("--cnis", default="flannel:vxlan,calico:bgp,calico:vxlan")
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [r for cni in args.cnis.split(",") for r in measure(cni, args.settle, args.seconds)]
    for r in rows:
        print(f"{r['cni']:14} {r['container']:32} {r['cpu_pct']:6.2f} % CPU "
              f"{r['mem_mib']:7.1f} MiB", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
