"""The context every step of `up` shares while it builds one cluster."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from testbed.cluster import model
from testbed.cni import ClusterRef, Cni, NodeRef
from testbed.cni.select import Selection
from testbed.constants import ETCD_PORT, LABEL_BACKEND, LABEL_BUILD, LABEL_CNI, LABEL_IMAGES
from testbed.provider.base import Provider
from testbed.scenario import Scenario
from testbed_contract.agent import PodRecord


@dataclass
class UpContext:
    """What the steps of `up` share while they build one cluster."""

    provider: Provider
    scenario: Scenario
    name: str
    cni: Cni
    backend: str
    selection: Selection | None = None
    tags: dict[str, str] = field(default_factory=dict)
    etcd_ip: str = ""
    nodes: list[NodeRef] = field(default_factory=list)
    pods: list[PodRecord] = field(default_factory=list)
    # (step title, wall seconds) of each finished step, then sub-steps as "step / part"
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def ref(self) -> ClusterRef:
        """The cluster as the CNI module sees it."""
        assert self.selection is not None
        return ClusterRef(
            name=self.name, network=model.network_name(self.name), backend=self.backend,
            etcd_endpoint=f"http://{self.etcd_ip}:{ETCD_PORT}",
            images=self.selection.images, nodes=tuple(self.nodes),
            options={k: v for k, v in (("mtu", self.scenario.cni.mtu),
                                       ("pod_cidr", self.scenario.cni.pod_cidr)) if v},
        )

    def reserved_cidrs(self) -> tuple[str, ...]:
        """Pod and service ranges no node network may overlap."""
        pod = self.scenario.cni.pod_cidr or self.cni.default_pod_cidr
        return tuple(c for c in (pod, self.scenario.service_cidr) if c)

    def labels(self) -> dict[str, str]:
        """Labels that let `status` find the cluster's CNI, backend and build again."""
        assert self.selection is not None
        return {LABEL_CNI: self.cni.name, LABEL_BACKEND: self.backend,
                LABEL_BUILD: self.selection.build,
                LABEL_IMAGES: json.dumps(self.images(), sort_keys=True)}

    def images(self) -> dict[str, str]:
        """Every image the cluster runs: core images by name, CNI images as `<cni>-<role>`
        (a CNI role may share a core image's name: calico's `node`)."""
        assert self.selection is not None
        return {**self.tags, **{f"{self.cni.name}-{role}": ref
                                for role, ref in self.selection.images.items()}}
