"""`python -m testbed.bench`: cluster up/down against a bare-container floor, warm build, memory."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from testbed import images
from testbed.bench import timed_cli
from testbed.lifecycle.wait import parallel
from testbed.provider.base import ContainerSpec, Provider
from testbed.provider.docker import DockerProvider


def floor(provider: Provider, image: str, name: str, count: int = 4) -> float:
    """Seconds to start and remove `count` bare containers from the node image."""
    start = time.monotonic()
    parallel(lambda i: provider.run(ContainerSpec(
        name=f"{name}-bare-{i}", image=image, cluster=name, role="bench",
        command=["sleep", "infinity"], init=True)), range(count))
    provider.delete_cluster(name)
    return time.monotonic() - start


def memory(provider: Provider, cluster: str) -> list[dict[str, Any]]:
    """Idle memory (MiB) of each node container and its CNI daemons."""
    return [{"container": info.name, "role": info.role,
             "mem_mib": provider.stats(info.name).mem_mib}
            for info in provider.containers(cluster=cluster)]


def first_cross_node_packet(provider: Provider, cluster: str) -> float:
    """Seconds from now until a pod on node 1 first gets an answer from a pod on node 2."""
    from testbed.cluster.agent import NodeAgent

    a, b = f"{cluster}-node-1", f"{cluster}-node-2"
    src = NodeAgent(provider, a).pods()[0]["name"]
    dst = NodeAgent(provider, b).pods()[0]
    url = f"http://{str(dst['ip']).split('/')[0]}:8080/"
    start = time.monotonic()
    while time.monotonic() - start < 60:
        if NodeAgent(provider, a).probe(src, url, count=1, timeout=0.5).get("ok"):
            return time.monotonic() - start
    raise SystemExit(f"{cluster}: no cross-node answer within 60 s")


def cnis(args: argparse.Namespace) -> None:
    """Issue 3's figures: `up` of each CNI over the same floor, then time to first packet."""
    provider = DockerProvider()
    timed_cli(["images", "build"])  # every CNI's source build, so `up` times no build
    node_image = images.resolve(images.by_name("node")).tag
    tag = uuid.uuid4().hex[:6]
    floor(provider, node_image, f"bench-{tag}")
    rows = []
    for cni in args.cnis.split(","):
        name = f"b-{cni.replace(':', '-').replace('flannel', 'fl')}-{tag[:4]}"
        floor_s = floor(provider, node_image, name)
        try:
            up_s = timed_cli(["up", "bench", "--cni", cni, "--nodes", str(args.nodes), "--name",
                           name, "--build", "source"])
            first = first_cross_node_packet(provider, name)
        finally:
            timed_cli(["down", name])
        rows.append({"cni": cni, "floor_s": round(floor_s, 2), "up_s": round(up_s, 2),
                     "up_over_floor": round(up_s / floor_s, 2),
                     "first_cross_node_packet_s": round(first, 2)})
        print(f"{cni:14} up {up_s:6.2f} s = {up_s / floor_s:5.2f}x floor ({floor_s:.2f} s); "
              f"first cross-node answer {first:.2f} s after up returned", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


def main() -> None:
    """Run the foundation benchmark once and print its figures (JSON with --json)."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench")
    ap.add_argument("--cni", default="flannel:vxlan")
    ap.add_argument("--cnis", default="", help="comma-separated: up time and first packet "
                    "for each (e.g. flannel:vxlan,calico:bgp,calico:vxlan,weave)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.cnis:
        cnis(args)
        return
    provider = DockerProvider()
    name = f"bench-{uuid.uuid4().hex[:6]}"
    cni = args.cni.split(":")[0]
    timed_cli(["images", "build", "--cni", cni])
    node_image = images.resolve(images.by_name("node")).tag
    floor(provider, node_image, name)  # warm the engine's caches once
    floor_s = floor(provider, node_image, name)
    warm_build = timed_cli(["images", "build", "--cni", cni])
    try:
        up_s = timed_cli(["up", "bench", "--cni", args.cni, "--nodes", str(args.nodes),
                          "--name", name, "--build", "source"])
        time.sleep(5)
        mem = memory(provider, name)
    finally:
        down_s = timed_cli(["down", name])
    nodes = [m for m in mem if m["role"] == "node"]
    per_node = {n["container"]: round(n["mem_mib"] + sum(
        m["mem_mib"] for m in mem if m["role"] == "cni" and m["container"].startswith(
            n["container"] + "-")), 1) for n in nodes}
    result = {
        "cni": args.cni, "nodes": args.nodes,
        "floor_s": round(floor_s, 2),
        "up_s": round(up_s, 2), "up_over_floor": round(up_s / floor_s, 2),
        "down_s": round(down_s, 2), "down_over_floor": round(down_s / floor_s, 2),
        "warm_images_build_s": round(warm_build, 2),
        "idle_mem_mib_per_node": per_node, "containers": mem,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"floor (start+remove 4 bare containers): {result['floor_s']} s")
    print(f"up ({args.cni}, {args.nodes} nodes, 2 pods/node ready): {result['up_s']} s "
          f"= {result['up_over_floor']}x floor (target <= 6x)")
    print(f"down: {result['down_s']} s = {result['down_over_floor']}x floor (target <= 2x)")
    print(f"warm images build: {result['warm_images_build_s']} s (target <= 5 s)")
    for node, mib in per_node.items():
        print(f"idle memory {node} (node + CNI daemons): {mib} MiB")


if __name__ == "__main__":
    main()
