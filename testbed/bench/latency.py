"""`python -m testbed.bench.latency`: RR and CRR latency per path and CNI, in microseconds.

For each CNI a `light` cluster (2 nodes) comes up; sockperf ping-pong (RR) and wrk with a new
connection per request (CRR) run over loopback in a pod, node-to-node on the host network
(no CNI), pod-to-pod on one node and across nodes, and pod-to-service (kube-proxy's DNAT and
conntrack). The cluster is removed afterwards, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from typing import Any

from testbed import scenario
from testbed.load import latency
from testbed.paths import SCENARIOS_DIR
from testbed.provider.docker import DockerProvider
from testbed.run import latency as run_latency


def one(cni: str, seconds: int) -> list[dict[str, Any]]:
    """Up a light cluster with `cni`, measure, and always tear it down."""
    provider = DockerProvider()
    name = f"bench-rr-{uuid.uuid4().hex[:6]}"
    cli = [sys.executable, "-m", "testbed"]
    try:
        subprocess.run([*cli, "up", str(SCENARIOS_DIR / "light.yaml"), "--cni", cni,
                        "--name", name], check=True, capture_output=True, text=True)
        spec = scenario.load(str(SCENARIOS_DIR / "light.yaml"))
        return [{"cni": cni, **m.summary()}
                for m in run_latency.measure(provider, name, spec, seconds)]
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"up {cni} failed: {(e.stderr or '').strip()[-400:]}") from e
    finally:
        subprocess.run([*cli, "down", name], capture_output=True)


def main() -> None:
    """Print a table (JSON with --json)."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.latency")
    ap.add_argument("--cnis", default="flannel:vxlan,calico:bgp")
    ap.add_argument("--seconds", type=int, default=latency.SECONDS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [r for cni in args.cnis.split(",") for r in one(cni, args.seconds)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'cni':14} {'path':24} {'kind':4} {'rate/s':>9} {'p50 us':>8} {'p90 us':>8} "
          f"{'p99 us':>8} {'p99.9 us':>9}")
    for r in rows:
        p999 = f"{r['p999_us']:9.1f}" if r["p999_us"] is not None else f"{'-':>9}"
        print(f"{r['cni']:14} {r['path']:24} {r['kind']:4} {r['rate_per_s']:9.0f} "
              f"{r['p50_us']:8.1f} {r['p90_us']:8.1f} {r['p99_us']:8.1f} {p999}")


if __name__ == "__main__":
    main()
