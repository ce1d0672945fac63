"""The orchestrator's side of the registry: writes and reads through the host's etcd client.

The key layout and records are testbed_contract.registry's (the node daemon reads the same keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from testbed.cluster.etcd import ClusterEtcd
from testbed.errors import StepError
from testbed.lifecycle.wait import parallel
from testbed.provider.base import Provider
from testbed_contract.registry import (
    CLUSTER_KEY,
    PREFIX,
    Pod,
    Registry,
    Service,
    pod_key,
    service_key,
)


def put(provider: Provider, cluster: str, key: str, value: Mapping[str, Any]) -> None:
    """Write one JSON record."""
    ClusterEtcd(provider, cluster).put(key, json.dumps(value, sort_keys=True))


def delete(provider: Provider, cluster: str, key: str) -> None:
    """Remove one key (absent is fine)."""
    ClusterEtcd(provider, cluster).delete(key)


def read(provider: Provider, cluster: str) -> Registry:
    """One consistent read of everything under /testbed/ (empty when nothing is registered)."""
    items, revision = ClusterEtcd(provider, cluster).range(PREFIX)
    return Registry.from_items(items, revision)


def pod_record(agent_pod: Mapping[str, Any], labels: Mapping[str, str]) -> Pod:
    """A registry pod from the agent's pod record and its deployment's labels."""
    return Pod(name=str(agent_pod["name"]), node=str(agent_pod.get("node") or ""),
               ip=str(agent_pod.get("ip") or "").split("/")[0], labels=dict(labels),
               containers=tuple({"name": c.get("name"), "kind": c.get("kind"),
                                 "port": c.get("port")}
                                for c in agent_pod.get("containers", [])))


def register_pod(provider: Provider, cluster: str, pod: Pod) -> None:
    """Publish one pod (after the agent created it, so its node already knows it)."""
    put(provider, cluster, pod_key(pod.name), pod.to_json())


def publish(provider: Provider, cluster: str, config: Mapping[str, Any],
            services: list[Service], pods: list[Pod]) -> None:
    """Write the cluster config, the services and the pods (independent keys, in parallel)."""
    writes: list[tuple[str, Mapping[str, Any]]] = [(CLUSTER_KEY, config)]
    writes += [(service_key(s.name), s.to_json()) for s in services]
    writes += [(pod_key(p.name), p.to_json()) for p in pods]
    etcd = ClusterEtcd(provider, cluster)  # one port lookup for every write
    parallel(lambda kv: etcd.put(kv[0], json.dumps(kv[1], sort_keys=True)), writes)


def read_service(provider: Provider, cluster: str, name: str) -> dict[str, Any]:
    """One service as registered: its record plus `cluster_ip` and its ready `endpoints`."""
    reg = read(provider, cluster)
    svc = reg.services.get(name)
    if svc is None:
        known = ", ".join(sorted(reg.services)) or "none"
        raise StepError(f"service {name!r} is not in the registry of {cluster} "
                        f"(services: {known})")
    return {**svc.to_json(), "cluster_ip": svc.cluster_ip,
            "endpoints": {svc.port_name(p): [str(e) for e in reg.endpoints(svc, p)]
                          for p in svc.ports}}
