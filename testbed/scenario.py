"""Scenarios: the Kubernetes-shaped YAML a cluster and a run are built from, validated."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shlex
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from testbed import yamlfile
from testbed.constants import INT64_MAX, MAX_NODES, MIN_NODES, RELEASE_PATTERN
from testbed.errors import UserError
from testbed.networks import check_networks
from testbed.paths import SCENARIOS_DIR
from testbed.sweepconf import SweepProfile
from testbed.validation import (
    HOST,
    INGRESS_PATH,
    check_images,
    check_labels,
    ipv4_network,
    one_line,
    short,
)

DEFAULT_SCENARIO = SCENARIOS_DIR / "default.yaml"
NAME = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
SCENARIO_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$"
NODEPORT_RANGE = (30000, 32767)
LoadPath = Literal["pod-to-service", "nodeport", "ingress"]
LOAD_PATHS: tuple[LoadPath, ...] = ("pod-to-service", "nodeport", "ingress")



def distinct(*groups: list[object]) -> bool:
    """Whether no group holds the same value twice."""
    return all(len(set(g)) == len(g) for g in groups)

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CniConfig(_Model):
    """Which CNI, backend, release (or fork module) and build; optional MTU, pod CIDR and
    image overrides."""

    name: str = "flannel"
    backend: str | None = None
    # The upstream release to run (default: the CNI's pinned one), e.g. v3.31.0.
    version: str | None = Field(default=None, pattern=RELEASE_PATTERN)
    # A fork's Go module path to build instead of upstream's (source builds only).
    module: str | None = Field(default=None,
                               pattern=r"^[a-z0-9.-]+\.[a-z]{2,}(/[A-Za-z0-9._~-]+)+$")
    build: Literal["auto", "upstream", "source"] = "auto"
    mtu: int | None = Field(default=None, ge=576, le=9000)
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    images: dict[str, str] = Field(default_factory=dict)

    @field_validator("pod_cidr")
    @classmethod
    def _pod_network(cls, v: str | None) -> str | None:
        return None if v is None else ipv4_network(v)

    @field_validator("images")
    @classmethod
    def _references(cls, v: dict[str, str]) -> dict[str, str]:
        check_images(v, "")
        return v


class Container(_Model):
    """A process in a pod: the HTTP workload on `port`, a `command`, or else it sleeps."""

    name: str = Field(pattern=NAME)
    port: int | None = Field(default=None, ge=1, le=65535)
    command: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_kind(self) -> Container:
        if self.port and self.command:
            raise ValueError(f"container {self.name}: give a port (HTTP workload) or a "
                             "command, not both; allowed: port or command")
        return self

    def agent_spec(self) -> str:
        """The in-node agent's `--container` form."""
        if self.port:
            return f"{self.name}=http:{self.port}"
        if self.command:
            return f"{self.name}=cmd:{shlex.join(self.command)}"
        return f"{self.name}=sleep"


class Placement(_Model):
    """Spread round-robin over all nodes (default) or over the listed node numbers."""

    nodes: list[int] = Field(default_factory=list)


class Deployment(_Model):
    """Replicas of one pod template."""

    name: str = Field(pattern=NAME)
    replicas: int = Field(default=1, ge=0, le=200)
    labels: dict[str, str] = Field(default_factory=dict)
    _labels = field_validator("labels")(classmethod(lambda cls, v: check_labels(v)))
    containers: list[Container] = Field(
        default_factory=lambda: [Container(name="app", port=8080)], min_length=1)
    placement: Placement = Field(default_factory=Placement)

    @field_validator("containers")
    @classmethod
    def _unique(cls, v: list[Container]) -> list[Container]:
        if not distinct([c.name for c in v], [c.port for c in v if c.port]):
            raise ValueError("container names and ports must be unique within a pod; allowed: "
                             "each name and port once")
        return v

    @property
    def pod_labels(self) -> dict[str, str]:
        """Labels every replica carries (`app: <name>` unless given)."""
        return self.labels or {"app": self.name}


class ServicePort(_Model):
    """One service port: `port` on the ClusterIP, `targetPort` on the pods, `nodePort`."""

    name: str | None = None
    port: int = Field(ge=1, le=65535)
    target_port: int | None = Field(default=None, alias="targetPort", ge=1, le=65535)
    node_port: int | None = Field(default=None, alias="nodePort")
    protocol: Literal["TCP"] = "TCP"

    @field_validator("node_port")
    @classmethod
    def _in_range(cls, v: int | None) -> int | None:
        lo, hi = NODEPORT_RANGE
        if v is not None and not lo <= v <= hi:
            raise ValueError(f"nodePort {v} is outside {lo}-{hi}; allowed: {lo} to {hi}")
        return v

    @property
    def target(self) -> int:
        """The pod port (defaults to `port`, as in Kubernetes)."""
        return self.target_port or self.port


class Service(_Model):
    """A Kubernetes Service: a stable virtual IP load-balanced over ready selected pods."""

    name: str = Field(pattern=NAME)
    type: Literal["ClusterIP", "NodePort"] = "ClusterIP"
    selector: dict[str, str] = Field(min_length=1)
    _labels = field_validator("selector")(classmethod(lambda cls, v: check_labels(v)))
    ports: list[ServicePort] = Field(min_length=1)
    cluster_ip: str | None = Field(default=None, alias="clusterIP")

    @field_validator("cluster_ip")
    @classmethod
    def _ipv4(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{short(v)} is not an IPv4 address; allowed: an IPv4 address "
                             "inside serviceCIDR, e.g. 10.96.0.50") from None

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, v: list[ServicePort]) -> list[ServicePort]:
        if not distinct([p.port for p in v], [p.name for p in v if p.name]):
            raise ValueError("duplicate port or port name; allowed: each port and name once "
                             "per service")
        return v


class IngressPath(_Model):
    """`path` (prefix) routed to `service:port`."""

    path: str = Field(default="/", pattern=INGRESS_PATH)
    service: str
    port: int = Field(ge=1, le=65535)


class IngressRule(_Model):
    """Host-based rule with path prefixes, as in networking.k8s.io/v1 Ingress."""

    host: str = Field(pattern=HOST, max_length=253)
    paths: list[IngressPath] = Field(min_length=1)


class LabelSelector(_Model):
    """`matchLabels`, as in Kubernetes."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    _labels = field_validator("match_labels")(classmethod(lambda cls, v: check_labels(v)))


class PolicyPeer(_Model):
    """`from` entry: pods selected by labels."""

    pod_selector: LabelSelector = Field(alias="podSelector")


class PolicyPort(_Model):
    """A destination port the rule allows."""

    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP"] = "TCP"


class IngressPolicyRule(_Model):
    """One ingress rule: who (`from`) may reach which `ports`."""

    from_: list[PolicyPeer] = Field(default_factory=list, alias="from")
    ports: list[PolicyPort] = Field(default_factory=list)


class NetworkPolicy(_Model):
    """The Kubernetes NetworkPolicy subset the testbed enforces through the CNI."""

    name: str = Field(pattern=NAME)
    pod_selector: LabelSelector = Field(alias="podSelector")
    policy_types: list[Literal["Ingress"]] = Field(default=["Ingress"], alias="policyTypes")
    ingress: list[IngressPolicyRule] = Field(default_factory=list)


class LoadProfile(_Model):
    """Locust's knobs for `run`."""

    users: int = Field(default=20, ge=1, le=5000)
    spawn_rate: float = Field(default=10, gt=0, le=1000)
    duration_s: float = Field(default=30, gt=0, le=24 * 3600)
    seed: int = Field(default=1, ge=0, le=INT64_MAX)
    paths: list[LoadPath] = Field(default_factory=lambda: list(LOAD_PATHS), min_length=1)

    @field_validator("paths")
    @classmethod
    def _once(cls, v: list[LoadPath]) -> list[LoadPath]:
        if len(set(v)) != len(v):
            raise ValueError(f"a path is listed twice; allowed: each of {', '.join(LOAD_PATHS)} "
                             "at most once")
        return v
    workers: int = Field(default=2, ge=1, le=16)


class Scenario(_Model):
    """A whole testbed scenario."""

    name: str = Field(default="default", pattern=SCENARIO_NAME)
    nodes: int = Field(default=3, ge=MIN_NODES, le=MAX_NODES)
    cni: CniConfig = Field(default_factory=CniConfig)
    service_cidr: str = Field(default="10.96.0.0/16", alias="serviceCIDR")
    deployments: list[Deployment] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    ingress: list[IngressRule] = Field(default_factory=list)
    network_policies: list[NetworkPolicy] = Field(default_factory=list,
                                                  alias="networkPolicies")
    load: LoadProfile = Field(default_factory=LoadProfile)
    sweep: SweepProfile = Field(default_factory=SweepProfile)  # open-loop sweep of load.paths
    # The edge: an internet network (outside client, echo server) the nodes join, and the
    # ingress on node 1. `edge: false` gives a bare kind-like cluster: nodes, CNI, pods.
    edge: bool = True

    @field_validator("service_cidr")
    @classmethod
    def _service_network(cls, v: str) -> str:
        return ipv4_network(v)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        deps = {d.name for d in self.deployments}
        if len(deps) != len(self.deployments):
            raise ValueError("deployments: deployment names must be unique; allowed: each name "
                             "once")
        for d in self.deployments:
            bad = [n for n in d.placement.nodes if not 1 <= n <= self.nodes]
            if bad:
                raise ValueError(f"deployment {d.name}: placement node {bad[0]} is not in "
                                 f"1..{self.nodes}; allowed: 1 to {self.nodes}")
        svcs = {s.name: s for s in self.services}
        if len(svcs) != len(self.services):
            raise ValueError("services: service names must be unique; allowed: each name once")
        node_ports = [p.node_port for s in self.services for p in s.ports if p.node_port]
        if len(set(node_ports)) != len(node_ports):
            raise ValueError("services: nodePorts must be unique across services; allowed: each "
                             "nodePort once")
        for s in self.services:
            if not any(_selects(s.selector, d.pod_labels) for d in self.deployments):
                raise ValueError(f"service {s.name}: selector {short(s.selector)} matches no "
                                 "deployment; allowed: the labels of a deployment")
            if s.type == "ClusterIP" and any(p.node_port for p in s.ports):
                raise ValueError(f"service {s.name}: nodePort needs type NodePort; allowed: "
                                 "type NodePort, or no nodePort")
        if self.ingress and not self.edge:
            raise ValueError("ingress rules need the edge: remove `edge: false` or the "
                             "ingress rules; allowed: ingress with the edge only")
        for rule in self.ingress:
            for p in rule.paths:
                if p.service not in svcs:
                    raise ValueError(f"ingress {rule.host}{p.path}: unknown service "
                                     f"{short(p.service)}; allowed: "
                                     f"{', '.join(svcs) or 'no services'}")
                if p.port not in [sp.port for sp in svcs[p.service].ports]:
                    raise ValueError(f"ingress {rule.host}{p.path}: service {p.service} has "
                                     f"no port {p.port}; allowed: "
                                     f"{', '.join(str(sp.port) for sp in svcs[p.service].ports)}")
        policies = [p.name for p in self.network_policies]
        if len(set(policies)) != len(policies):
            raise ValueError("networkPolicies: a name is used twice; allowed: unique names")
        check_networks(self.service_cidr, self.cni.name, self.cni.pod_cidr, self.nodes,
                       [(s.name, s.cluster_ip) for s in self.services])
        return self

    def pods(self) -> list[tuple[str, int, Deployment]]:
        """(pod name, node index from 1, deployment), replicas spread over allowed nodes."""
        out: list[tuple[str, int, Deployment]] = []
        slot = 0
        for dep in self.deployments:
            allowed = dep.placement.nodes or list(range(1, self.nodes + 1))
            for i in range(dep.replicas):
                out.append((f"{dep.name}-{i}", allowed[(slot if not dep.placement.nodes
                                                        else i) % len(allowed)], dep))
                slot += 1
        return out

    def digest(self) -> str:
        """A stable hash of the validated scenario, recorded with every result."""
        dumped = self.model_dump_json(by_alias=True, exclude_none=True)
        return hashlib.sha256(dumped.encode()).hexdigest()[:16]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _file(path: str | Path | None) -> Path:
    """The scenario file: a path, or the name of a shipped scenario (`light`)."""
    if path is None:
        return DEFAULT_SCENARIO  # '' is refused below, never read as the default
    text = str(path)
    if "\0" in text or not text.strip():
        raise UserError(f"scenario {short(text)}: not a file name; allowed: a path or one of "
                        f"{', '.join(sorted(p.stem for p in SCENARIOS_DIR.glob('*.yaml')))}")
    file = Path(path)
    shipped = SCENARIOS_DIR / f"{text}.yaml"
    try:
        if os.path.lexists(file):
            return file
        if "/" not in text and shipped.is_file():
            return shipped
    except OSError:
        return file
    raise UserError(f"{file}: scenario file does not exist; allowed: a path or one of "
                    f"{', '.join(sorted(p.stem for p in SCENARIOS_DIR.glob('*.yaml')))}")


def load(path: str | Path | None) -> Scenario:
    """Load and validate a scenario file; errors name the file, the field and what is allowed."""
    file = _file(path)
    data = yamlfile.load(file, "scenario file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{file}: the top level is {type(data).__name__}; allowed: a mapping "
                        "of scenario fields")
    return validate(data, file)


def revalidate(spec: Scenario, where: object) -> Scenario:
    """The scenario validated again after overrides (`--nodes`, `--cni`, `--seed`)."""
    return validate(spec.model_dump(by_alias=True), where)


def validate(data: dict[str, object], where: object) -> Scenario:
    """A scenario from parsed data; a refusal is one line naming `where` and the field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise UserError(one_line(Scenario, where, e)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise UserError(f"{where}: {' '.join(str(e).split())[:300]}") from None
