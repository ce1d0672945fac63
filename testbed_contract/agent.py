"""The node agent's replies as the host reads them: pod records and probe reports.

The agent (`python3 -m testbed_node ...`) prints one JSON object per command; these are the
shapes of the ones the host reads. Optional keys are marked `NotRequired`: a pod has no `ip`
until its CNI ADD returned one.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class ContainerRecord(TypedDict):
    """One process of a pod, as the agent started it."""

    name: str
    kind: str  # "http" (nginx), "pyhttp" (the Python server), "sleep" or "cmd"
    port: int | None
    argv: list[str]
    pid: int
    start_ticks: int | None
    log: str
    alive: NotRequired[bool]  # in `pod list`/`pod show` answers


class PodRecord(TypedDict):
    """One pod: its netns, what CNI ADD returned, and its processes."""

    name: str
    container_id: str  # the CNI_CONTAINERID the agent made up for the pod
    node: str
    netns: str
    ifname: str
    network: str
    conf: str
    cni_version: str
    status: str  # creating, running, deleting
    containers: list[ContainerRecord]
    created: str
    ip: NotRequired[str | None]
    address: NotRequired[str | None]  # ip/prefix
    cidr: NotRequired[str | None]
    gateway: NotRequired[str | None]
    mac: NotRequired[str | None]
    interfaces: NotRequired[list[dict[str, Any]]]
    ips: NotRequired[list[dict[str, Any]]]
    cni_result: NotRequired[dict[str, Any]]


class ProbeSample(TypedDict):
    """One timed request of a probe."""

    ok: bool
    status: int | None
    latency_ms: float | None
    error: str
    pod: str | None  # which pod answered (the workload's body says)
    client: str | None  # the source address the workload saw


class ProbeTarget(TypedDict):
    """One destination of a batched probe (`probe-many`, `testbed_node.probe --batch`)."""

    url: str
    count: int
    timeout: float
    headers: NotRequired[dict[str, str]]


class ProbeReply(TypedDict):
    """`probe`: N timed GETs; ok when all succeeded, latency_ms the median of good ones."""

    ok: bool
    status: int | None
    body: Any
    latency_ms: float | None
    samples: list[ProbeSample]
    error: str
    url: str
    count: int
    failures: int
