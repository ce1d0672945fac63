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
import time
import uuid
from typing import Any

from testbed.cluster.agent import NodeAgent
from testbed.load import latency
from testbed.load.latency import Latency
from testbed.paths import SCENARIOS_DIR
from testbed.provider.docker import DockerProvider
from testbed.services import registry

NODE_RR_PORT = 11112  # a sockperf server in node 2's own network namespace


def _pods(agent: NodeAgent) -> dict[str, str]:
    return {p["name"]: str(p.get("ip") or "") for p in agent.pods()}


def measure(provider: DockerProvider, cluster: str, seconds: int) -> list[Latency]:
    """Every path of one cluster: loopback, node-to-node, pod-to-pod (same, cross), service."""
    n1, n2 = f"{cluster}-node-1", f"{cluster}-node-2"
    on1, on2 = _pods(NodeAgent(provider, n1)), _pods(NodeAgent(provider, n2))
    client1 = next(p for p in on1 if p.startswith("client-"))
    client2 = next(p for p in on2 if p.startswith("client-"))
    server = next(p for p in on2 if p.startswith("iperf-"))
    echo2 = next(p for p in on2 if p.startswith("echo-"))
    node_ip = {c.name: c.ip for c in provider.containers(cluster, "node")}
    provider.spawn(n2, ["sockperf", "server", "--tcp", "-i", "0.0.0.0", "-p",
                        str(NODE_RR_PORT)])
    time.sleep(0.5)
    svc_rr = registry.read_service(provider, cluster, "iperf")["cluster_ip"]
    svc_echo = registry.read_service(provider, cluster, "echo")["cluster_ip"]
    rr, crr = latency.rr, latency.crr
    return [
        rr(provider, n2, server, "loopback", "127.0.0.1", seconds=seconds),
        crr(provider, n2, echo2, "loopback", "http://127.0.0.1:8080/", seconds),
        rr(provider, n1, None, "node-to-node", str(node_ip[n2]), NODE_RR_PORT, seconds),
        # the ingress's nginx answers on node 1's host network (404 from its default server)
        crr(provider, n2, None, "node-to-node", f"http://{node_ip[n1]}:80/", seconds),
        rr(provider, n2, client2, "pod-to-pod-same-node", on2[server], seconds=seconds),
        crr(provider, n2, client2, "pod-to-pod-same-node", f"http://{on2[echo2]}:8080/",
            seconds),
        rr(provider, n1, client1, "pod-to-pod-cross-node", on2[server], seconds=seconds),
        crr(provider, n1, client1, "pod-to-pod-cross-node", f"http://{on2[echo2]}:8080/",
            seconds),
        rr(provider, n1, client1, "pod-to-service", svc_rr, seconds=seconds),
        crr(provider, n1, client1, "pod-to-service", f"http://{svc_echo}:80/", seconds),
    ]


def one(cni: str, seconds: int) -> list[dict[str, Any]]:
    """Up a light cluster with `cni`, measure, and always tear it down."""
    provider = DockerProvider()
    name = f"bench-rr-{uuid.uuid4().hex[:6]}"
    cli = [sys.executable, "-m", "testbed"]
    try:
        subprocess.run([*cli, "up", str(SCENARIOS_DIR / "light.yaml"), "--cni", cni,
                        "--name", name], check=True, capture_output=True, text=True)
        return [{"cni": cni, **m.summary()} for m in measure(provider, name, seconds)]
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
