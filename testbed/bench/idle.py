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
from testbed.constants import LABEL_CLUSTER, LABEL_ROLE
from testbed.provider.docker import connect


def measure(cni: str, settle: float, seconds: float) -> list[dict[str, Any]]:
    """One cluster of `cni`: per CNI daemon, CPU % of one core over the window, MiB."""
    client = connect()
    name = f"idle-{uuid.uuid4().hex[:6]}"
    timed_cli(["up", "bench", "--cni", cni, "--name", name])
    try:
        time.sleep(settle)
        daemons = [c for c in client.containers.list(
            filters={"label": f"{LABEL_CLUSTER}={name}"}) if c.labels.get(LABEL_ROLE) == "cni"]
        first: dict[str, Any] = {str(c.name): c.stats(stream=False) for c in daemons}
        start = time.monotonic()
        time.sleep(seconds)
        last: dict[str, Any] = {str(c.name): c.stats(stream=False) for c in daemons}
        window = time.monotonic() - start
        rows = []
        for cname in first:
            used = (last[cname]["cpu_stats"]["cpu_usage"]["total_usage"]
                    - first[cname]["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9
            rows.append({"cni": cni, "container": cname,
                         "cpu_pct": round(100 * used / window, 2),
                         "mem_mib": round(last[cname]["memory_stats"]["usage"] / 2**20, 1)})
        return rows
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
