"""`status` and `list`: everything read back from Docker labels and the nodes themselves."""

from __future__ import annotations

from typing import Any

from testbed import cni as cnis
from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.constants import LABEL_NODE
from testbed.edge import inspect as edge
from testbed.errors import TestbedError, UserError
from testbed.lifecycle.wait import parallel
from testbed.provider.base import ContainerInfo, Provider

INCOMPLETE = "incomplete"


def state(provider: Provider, name: str, containers: list[ContainerInfo]) -> str:
    """`incomplete` when `up` did not finish (killed, or still running), else `ready` when
    every container runs, else `degraded`."""
    if not model.is_complete(provider, name):
        return INCOMPLETE
    return "ready" if containers and all(c.status == "running" for c in containers) \
        else "degraded"


def hint(name: str) -> str:
    """What to do about an incomplete cluster."""
    return (f"`up` did not finish for {name} (it was killed, or is still running): remove it "
            f"with `python -m testbed down {name}`")


def status(provider: Provider, name: str) -> dict[str, Any]:
    """Per node: container state, CNI daemons and their state, pod CIDR, pods; and the
    cluster's state (an `up` that was killed leaves an incomplete one)."""
    try:
        cluster = model.find(provider, name)
    except UserError:
        if name not in provider.clusters():
            raise
        # Killed before any node started: only a network (or etcd) is left.
        return {"cluster": name, "state": INCOMPLETE, "hint": hint(name), "cni": "",
                "backend": "", "build": "", "images": {}, "datastore": None, "nodes": [],
                "edge": None}
    module = cnis.REGISTRY.get(cluster.cni)

    def node(info: Any) -> dict[str, Any]:
        daemons = [c for c in cluster.containers
                   if c.role == "cni" and c.labels.get(LABEL_NODE) == info.name]
        entry: dict[str, Any] = {
            "name": info.name, "ip": info.ip, "state": info.status,
            "cni_daemons": [{"name": d.name, "state": d.status, "image": d.image}
                            for d in daemons],
        }
        if info.status == "running":
            try:
                entry |= module.node_status(provider, info.name) if module else {}
                entry["pods"] = [{"name": p["name"], "ip": p.get("ip")}
                                 for p in NodeAgent(provider, info.name).pods()]
            except TestbedError as e:
                entry["error"] = str(e)
        return entry

    etcd = cluster.etcd
    current = state(provider, cluster.name, cluster.containers)
    return {
        "cluster": cluster.name, "state": current,
        **({"hint": hint(cluster.name)} if current == INCOMPLETE else {}),
        "cni": cluster.cni, "backend": cluster.backend,
        "build": cluster.build, "images": cluster.images,
        "datastore": {"name": etcd.name, "ip": etcd.ip, "state": etcd.status} if etcd else None,
        "nodes": parallel(node, cluster.nodes),
        "edge": edge.status(cluster),
    }


def clusters(provider: Provider) -> list[dict[str, Any]]:
    """One line per cluster: name, state, CNI, node count, containers running."""
    out = []
    for name in provider.clusters():
        containers = provider.containers(cluster=name)
        nodes = [c for c in containers if c.role == "node"]
        labels = nodes[0].labels if nodes else {}
        out.append({
            "name": name, "state": state(provider, name, containers),
            "cni": labels.get("io.testbed.cni", ""),
            "backend": labels.get("io.testbed.backend", ""),
            "build": labels.get("io.testbed.build", ""), "nodes": len(nodes),
            "running": sum(c.status == "running" for c in containers),
            "containers": len(containers),
        })
    return out
