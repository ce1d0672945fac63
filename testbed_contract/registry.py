"""The service registry in etcd, as the API server would hold it: keys, records, endpoints.

Layout (all values JSON):

    /testbed/cluster            {"clusterCIDR", "serviceCIDR", "nodes": {name: ip}}
    /testbed/services/<name>    {"name", "type", "clusterIP", "selector", "ports": [...]}
    /testbed/pods/<name>        {"name", "node", "ip", "labels", "containers": [...]}
    /testbed/status/<name>      {"ready", "node", "containers": {name: bool}, "reason"}

The orchestrator writes the cluster, services and pods (the API objects); each node's daemon
writes the status of its own pods (the kubelet's part, on a lease that dies with the daemon)
and removes the pods that no longer exist on its node. Stdlib only: the node imports it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "/testbed/"
CLUSTER_KEY = "/testbed/cluster"
SERVICES = "/testbed/services/"
PODS = "/testbed/pods/"
STATUS = "/testbed/status/"
NAMESPACE = "default"
# The validated scenario a cluster was made from, kept in its etcd (the API server's role).
SCENARIO_KEY = "/testbed/scenario"


def service_key(name: str) -> str:
    """Where a service lives."""
    return f"{SERVICES}{name}"


def pod_key(name: str) -> str:
    """Where a pod lives."""
    return f"{PODS}{name}"


def status_key(name: str) -> str:
    """Where a pod's readiness (written by its node) lives."""
    return f"{STATUS}{name}"


@dataclass(frozen=True)
class ServicePort:
    """One port of a service; `name` is "" for a service's only, unnamed port."""

    port: int
    target_port: int
    name: str = ""
    node_port: int = 0
    protocol: str = "TCP"

    def to_json(self) -> dict[str, Any]:
        """Kubernetes field names."""
        out: dict[str, Any] = {"name": self.name, "port": self.port,
                               "targetPort": self.target_port, "protocol": self.protocol}
        if self.node_port:
            out["nodePort"] = self.node_port
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ServicePort:
        """Parse one port record."""
        return cls(port=int(d["port"]), target_port=int(d.get("targetPort") or d["port"]),
                   name=str(d.get("name") or ""), node_port=int(d.get("nodePort") or 0),
                   protocol=str(d.get("protocol") or "TCP"))


@dataclass(frozen=True)
class Service:
    """A service with its allocated ClusterIP (and NodePorts)."""

    name: str
    cluster_ip: str
    selector: dict[str, str]
    ports: tuple[ServicePort, ...]
    type: str = "ClusterIP"
    namespace: str = NAMESPACE

    def port_name(self, port: ServicePort) -> str:
        """kube-proxy's ServicePortName.String(): `ns/name` plus `:port` when named."""
        return f"{self.namespace}/{self.name}" + (f":{port.name}" if port.name else "")

    def to_json(self) -> dict[str, Any]:
        """Kubernetes field names."""
        return {"name": self.name, "namespace": self.namespace, "type": self.type,
                "clusterIP": self.cluster_ip, "selector": dict(self.selector),
                "ports": [p.to_json() for p in self.ports]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Service:
        """Parse a service record."""
        return cls(name=str(d["name"]), cluster_ip=str(d["clusterIP"]),
                   selector={str(k): str(v) for k, v in dict(d.get("selector") or {}).items()},
                   ports=tuple(ServicePort.from_json(p) for p in d.get("ports") or []),
                   type=str(d.get("type") or "ClusterIP"),
                   namespace=str(d.get("namespace") or NAMESPACE))


@dataclass(frozen=True)
class Pod:
    """A pod as the registry knows it: where it runs, its address and its labels."""

    name: str
    node: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    containers: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON record."""
        return {"name": self.name, "node": self.node, "ip": self.ip, "labels": dict(self.labels),
                "containers": [dict(c) for c in self.containers]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Pod:
        """Parse a pod record (an address given with its prefix loses it)."""
        return cls(name=str(d["name"]), node=str(d.get("node") or ""),
                   ip=str(d.get("ip") or "").split("/")[0],
                   labels={str(k): str(v) for k, v in dict(d.get("labels") or {}).items()},
                   containers=tuple(dict(c) for c in d.get("containers") or []))


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Equality-based label selection; an empty selector selects nothing (as for services)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Endpoint:
    """One ready backend of a service port."""

    pod: str
    node: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass
class Registry:
    """One consistent read of the registry (a single etcd range at `revision`)."""

    cluster: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    revision: int = 0

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, bytes | str]], revision: int = 0) -> Registry:
        """Build from (key, value) pairs under PREFIX; unparsable values are skipped."""
        reg = cls(revision=revision)
        for key, raw in items:
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            try:
                if key == CLUSTER_KEY:
                    reg.cluster = value
                elif key.startswith(SERVICES):
                    svc = Service.from_json(value)
                    reg.services[svc.name] = svc
                elif key.startswith(PODS):
                    pod = Pod.from_json(value)
                    reg.pods[pod.name] = pod
                elif key.startswith(STATUS):
                    reg.status[key[len(STATUS):]] = value
            except (KeyError, TypeError, ValueError):
                continue
        return reg

    @property
    def cluster_cidr(self) -> str:
        """The pod network (kube-proxy's --cluster-cidr); "" when unknown."""
        return str(self.cluster.get("clusterCIDR") or "")

    @property
    def nodes(self) -> dict[str, str]:
        """Node name -> node IP (the cluster network address)."""
        return {str(k): str(v) for k, v in dict(self.cluster.get("nodes") or {}).items()}

    def ready(self, pod: str) -> bool:
        """Whether the pod's node reports it ready."""
        return bool(self.status.get(pod, {}).get("ready"))

    def selected(self, svc: Service) -> list[Pod]:
        """Pods the service's selector matches, ready or not, in address order."""
        pods = [p for p in self.pods.values() if selects(svc.selector, p.labels)]
        return sorted(pods, key=_pod_order)

    def endpoints(self, svc: Service, port: ServicePort) -> list[Endpoint]:
        """The ready, addressed pods the selector matches: the service port's endpoints."""
        return [Endpoint(p.name, p.node, p.ip, port.target_port) for p in self.selected(svc)
                if p.ip and self.ready(p.name)]


def _pod_order(p: Pod) -> tuple[int, str]:
    try:
        return int(ipaddress.ip_address(p.ip)), p.name
    except ValueError:
        return 1 << 33, p.name
