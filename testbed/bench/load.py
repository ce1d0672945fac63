"""`python -m testbed.bench.load`: the run's overhead over its load time, and Locust's ceiling
per worker process against wrk's on the same container-to-container path, in one run."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from testbed.load.locust import LocustPhase, Place, Profile
from testbed.provider.base import Provider
from testbed.provider.docker import DockerProvider
from testbed_contract.node import AGENT_CMD, in_pod

URL = "http://127.0.0.1:8080/"


def wrk(provider: Provider, node: str, pod: str, conns: int, seconds: int) -> float:
    """Requests per second wrk (one thread) gets from inside a pod."""
    res = provider.exec(node, in_pod(pod, ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", URL]))
    found = re.search(r"Requests/sec:\s+([\d.]+)", res.stdout)
    if not found:
        raise SystemExit(f"wrk gave no rate: {res.stdout[-400:]} {res.stderr[-400:]}")
    return float(found.group(1))


def ceiling(users: int, seconds: int) -> dict[str, Any]:
    """Locust (1 worker, no wait between requests) vs wrk on container-to-container."""
    provider: Provider = DockerProvider()
    name = f"bench-load-{uuid.uuid4().hex[:6]}"
    cli = [sys.executable, "-m", "testbed"]
    subprocess.run([*cli, "up", "light", "--name", name, "--build", "source"], check=True,
                   capture_output=True)
    try:
        node1, node2 = f"{name}-node-1", f"{name}-node-2"
        master_ip = next(p for p in _pods(provider, node1) if p["name"] == "client-0")["ip"]
        phase = LocustPhase(provider, "container-to-container", Place(node1, "client-0"),
                            str(master_ip).split("/")[0], [Place(node2, "client-1")],
                            {"container-to-container": {"urls": [URL]}},
                            Profile(users, users, seconds, 1, user_rps=0))
        with tempfile.TemporaryDirectory() as out:
            locust = phase.run(Path(out))
        wrk_rps = wrk(provider, node2, "client-1", users, seconds)
    finally:
        subprocess.run([*cli, "down", name], capture_output=True)
    return {"path": "container-to-container", "users": users, "seconds": seconds,
            "locust_rps_per_worker": locust.rps, "locust_p50_ms": locust.p50_ms,
            "locust_worker_cpu_max": locust.generator_cpu_max,
            "wrk_rps": wrk_rps, "locust_over_wrk": round(locust.rps / wrk_rps, 3)}


def _pods(provider: Provider, node: str) -> list[dict[str, Any]]:
    res = provider.exec(node, [*AGENT_CMD, "pod", "list"])
    pods: list[dict[str, Any]] = json.loads(res.stdout)
    return pods


def overhead(cni: str) -> dict[str, Any]:
    """A default `run`: time outside the load phases over the load time."""
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-m", "testbed", "run", cni, "--out", tmp,
                              "--db", f"{tmp}/db.sqlite", "--json"], capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-2000:])
        s = json.loads(res.stdout)
    return {"cni": cni, "duration_s": s["duration_s"], "load_s": s["load_s"],
            "overhead_s": s["overhead_s"], "overhead_over_load": round(
                s["overhead_s"] / s["load_s"], 3)}


def main() -> None:
    """Print both figures (JSON with --json)."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.load")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--cni", default="flannel")
    ap.add_argument("--skip-run", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = {"ceiling": ceiling(args.users, args.seconds)}
    if not args.skip_run:
        result["run"] = overhead(args.cni)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    c = result["ceiling"]
    print(f"container-to-container: Locust {c['locust_rps_per_worker']:.0f} rps per worker "
          f"(CPU peak {c['locust_worker_cpu_max']}%), wrk {c['wrk_rps']:.0f} rps: "
          f"ratio {c['locust_over_wrk']}")
    if "run" in result:
        r = result["run"]
        print(f"run {r['cni']}: {r['duration_s']} s total, {r['load_s']} s load, "
              f"{r['overhead_s']} s outside load = {r['overhead_over_load']}x the load time")


if __name__ == "__main__":
    main()
