"""`python -m testbed.bench.scale`: how `up`, convergence and memory grow with the node count.

Per CNI and node count: the same-run floor (start, then remove, as many bare containers from
the node image as the cluster has nodes), then `up` of N nodes with `--pods-per-node` HTTP
pods each (in this process, so the step runner's timings come back), the time until the CNI's
control plane has converged (BGP full mesh Established, flannel leases, routes and FDB
entries everywhere), until the connectivity check passes, memory per node, the CNI daemons'
CPU and memory idle and under a pod-to-pod load ring, and `down`. A JSON file, SVG plots and
a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from testbed import cni as cnis
from testbed import images, scenario
from testbed.bench import converge, footprint, timed_cli
from testbed.bench.scaleplot import plots, table
from testbed.check import matrix
from testbed.cluster import model
from testbed.cluster.handle import Cluster
from testbed.constants import MAX_NODES
from testbed.errors import TestbedError, UserError
from testbed.lifecycle.wait import parallel
from testbed.provider.base import ContainerSpec, Provider
from testbed.provider.docker import DockerProvider

PREFIX = "tbt-scale"
CHECK_TIMEOUT = 120.0


def bare_floor(provider: Provider, image: str, name: str, count: int) -> tuple[float, float]:
    """Seconds to start `count` bare containers of the node image, and to remove them."""
    start = time.monotonic()
    try:
        parallel(lambda i: provider.run(ContainerSpec(
            name=f"{name}-bare-{i}", image=image, cluster=name, role="bench",
            command=["sleep", "infinity"], init=True)), range(count), workers=count)
    finally:  # removed also after a failure or Ctrl-C half way
        started = time.monotonic()
        provider.delete_cluster(name)
    return started - start, time.monotonic() - started


def spec_for(cni: str, backend: str, nodes: int, per_node: int,
             service: bool = False) -> scenario.Scenario:
    """A bare (edge-less) scenario: `nodes` nodes, `per_node` HTTP pods on each; with
    `service`, one ClusterIP service over all of them (every node's rules list every pod)."""
    return scenario.validate({
        "name": "scale", "edge": False, "nodes": nodes,
        "cni": {"name": cni, "backend": backend, "build": "source"},
        # one deployment of `per_node` replicas per node (a deployment has at most 200);
        # replicas go round-robin across deployments, so every node gets `per_node`
        "deployments": [{"name": f"echo{i}", "replicas": per_node, "labels": {"app": "echo"},
                         "containers": [{"name": "app", "port": 8080}]}
                        for i in range(1, nodes + 1)],
        "services": ([{"name": "echo", "selector": {"app": "echo"},
                       "ports": [{"port": 80, "targetPort": 8080}]}] if service else []),
    }, "the scale benchmark's scenario")


def check_passes(provider: Provider, name: str, timeout: float) -> tuple[float | None, int]:
    """Seconds until the connectivity matrix has no failed case (None on timeout), cases."""
    start = time.monotonic()
    cases: list[Any] = []
    while time.monotonic() - start < timeout:
        try:
            cases = matrix.run(provider, model.find(provider, name))
        except Exception:  # e.g. docker-py's exec demux under load: look again
            cases = []
        if cases and not any(c.status == "fail" for c in cases):
            return time.monotonic() - start, len(cases)
        time.sleep(1)
    return None, len(cases)


def cpu_seconds(provider: Provider, name: str) -> float:
    """CPU-seconds the cluster's containers have used so far (etcd, nodes with their pods and
    CNI plugins, CNI daemons): the work of `up`, robust to a noisy neighbour's load."""
    infos = [c for c in provider.containers(cluster=name) if c.status == "running"]
    return sum(u.cpu_s for u in parallel(lambda c: provider.stats(c.name, one_shot=True),
                                         infos, workers=16))


def one(provider: Provider, label: str, nodes: int, per_node: int, name: str,
        idle_s: float, load_rps: float = 0.0, load_s: float = 0.0) -> dict[str, Any]:
    """One cluster: floor, up, convergence, check, idle footprint, footprint under a
    pod-to-pod ring of `load_rps` for `load_s` (skipped at 0), down."""
    module, backend, _ = cnis.parse(label)
    spec = spec_for(module.name, backend, nodes, per_node)
    # ensured per cluster, as `up` does: the floor runs the image this cluster will run
    node_image = images.ensure(provider.images, (images.by_name("node"),))["node"]
    floor_up, floor_down = bare_floor(provider, node_image, name, nodes)
    row: dict[str, Any] = {"cni": label, "nodes": nodes, "pods": nodes * per_node,
                           "floor_up_s": round(floor_up, 2), "floor_down_s": round(floor_down, 2)}
    handle = Cluster(provider, name)
    t0 = time.monotonic()
    try:
        try:
            ctx = handle.up(spec, module, backend)
        except Exception as e:  # recorded: the largest size that fits is the finding
            row.update(error=f"{type(e).__name__}: {e}"[:3000],
                       failed_after_s=round(time.monotonic() - t0, 2))
            return row
        up_s = time.monotonic() - t0
        up_cpu = cpu_seconds(provider, name)
        addressed = sum(1 for p in ctx.pods if p.get("ip"))
        ips = {n.name: n.ip for n in ctx.nodes}
        cp_s, cp = converge.wait(provider, module.name, name, ips, backend)
        cp_at = time.monotonic() - t0 if cp_s is not None else None
        check_s, cases = check_passes(provider, name, CHECK_TIMEOUT)
        ready_at = time.monotonic() - t0 if check_s is not None else None
        usage = footprint.idle(provider, name, idle_s)
        if load_rps > 0 and load_s > 0:
            usage["loaded"] = footprint.loaded(provider, name, ctx.pods, load_rps, load_s)
        row.update({
            "up_s": round(up_s, 2), "up_over_floor": round(up_s / floor_up, 2),
            "up_cpu_s": round(up_cpu, 1),
            "up_cpu_s_per_pod": round(up_cpu / max(1, nodes * per_node), 3),
            "pods_addressed": addressed,
            "control_plane_s": round(cp_at, 2) if cp_at is not None else None,
            "control_plane": cp,
            "check_passed_s": round(ready_at, 2) if ready_at is not None else None,
            "check_cases": cases,
            "steps": [{"step": s, "s": round(t, 2)} for s, t in ctx.timings], **usage})
    finally:
        t1 = time.monotonic()
        handle.down()
        row["down_s"] = round(time.monotonic() - t1, 2)
        row["down_over_floor"] = round(row["down_s"] / floor_down, 2)
    mem = [r["node_mem_mib"] + r["cni_mem_mib"] for r in row.get("per_node", [])]
    row["mem_per_node_mib"] = round(sum(mem) / len(mem), 1) if mem else None
    return row


def counts(text: str) -> list[int]:
    """`--nodes 3,5,10`: each a node count the scenario accepts."""
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or any(not 2 <= n <= MAX_NODES for n in out):
        raise UserError(f"--nodes {text!r}: problem: not a list of node counts; allowed: "
                        f"comma-separated integers 2 to {MAX_NODES}, e.g. 3,5,10")
    return out


def main() -> None:
    """Run every CNI at every node count (`--repeat` times), write JSON and plots, print a table."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.scale")
    ap.add_argument("--cnis", default="flannel:vxlan,calico:bgp")
    ap.add_argument("--nodes", default="3,5,10")
    ap.add_argument("--pods-per-node", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--load-rps", type=float, default=200.0,
                    help="requests/s of the pod-to-pod ring under which the CNI daemons' CPU "
                         "and memory are measured again (0: no loaded measurement)")
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--out", default="scale-results")
    args = ap.parse_args()
    try:
        sizes = counts(args.nodes)
        labels = [c for c in args.cnis.split(",") if c]
        for label in labels:
            cnis.parse(label)
        if args.load_rps < 0 or args.load_seconds < 0:
            raise UserError("--load-rps/--load-seconds: problem: negative; allowed: 0 (no "
                            "loaded measurement) or more")
        if not 1 <= args.pods_per_node <= 100:
            raise UserError(f"--pods-per-node {args.pods_per_node}: problem: out of range; "
                            "allowed: 1 to 100")
    except UserError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    provider = DockerProvider()
    for label in labels:
        timed_cli(["images", "build", "--cni", label.split(":")[0]])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    k = 0
    try:
        for _ in range(args.repeat):
            for label in labels:
                for n in sizes:
                    k += 1
                    row = one(provider, label, n, args.pods_per_node, f"{PREFIX}-{k}",
                              args.idle_seconds, args.load_rps, args.load_seconds)
                    rows.append(row)
                    print(table([row], header=k == 1), flush=True)
                    (out / "scale.json").write_text(json.dumps(rows, indent=2))
    except (TestbedError, KeyboardInterrupt) as e:  # the rows so far are in scale.json
        why = str(e) or "interrupted"
        print(f"scale: stopped after {len(rows)} clusters: {why}", file=sys.stderr)
        raise SystemExit(130 if isinstance(e, KeyboardInterrupt) else 1) from None
    for fname, svg in plots(rows).items():
        (out / fname).write_text(svg)
    print(table(rows))
    print(f"wrote {out / 'scale.json'} and {', '.join(plots(rows))} in {out}")


if __name__ == "__main__":
    main()
