"""Throughput like knb: iperf3 TCP (one and several streams) and UDP between pods."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from testbed.errors import StepError
from testbed.provider.base import Provider
from testbed_contract.node import AGENT_CMD

SECONDS = 3
STREAMS = 4


@dataclass(frozen=True)
class Throughput:
    """One iperf3 measurement."""

    path: str
    protocol: str
    streams: int
    gbit_s: float
    retransmits: int | None = None
    lost_pct: float | None = None
    mtu: int | None = None

    def summary(self) -> dict[str, Any]:
        """The `throughput[]` entry of summary.json."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _client(provider: Provider, node: str, pod: str, server: str,
            extra: list[str]) -> dict[str, Any]:
    res = provider.exec(node, [*AGENT_CMD, "pod", "exec", pod, "--", "iperf3", "-c", server,
                               "-p", "5201", "-t", str(SECONDS), "-J", *extra])
    try:
        data: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError as e:
        raise StepError(f"iperf3 from {pod} to {server}: {res.stderr.strip()[-300:]}") from e
    if "error" in data:
        raise StepError(f"iperf3 from {pod} to {server}: {data['error']}")
    return data


def measure(provider: Provider, node: str, pod: str, path: str, server: str,
            mtu: int | None = None, udp: bool = True) -> list[Throughput]:
    """TCP 1 stream, TCP N streams and (unless `udp` is False) UDP from a pod to `server`."""
    out = []
    for streams in (1, STREAMS):
        end = _client(provider, node, pod, server, ["-P", str(streams)])["end"]
        sent = end["sum_received"]
        out.append(Throughput(path, "tcp", streams, round(sent["bits_per_second"] / 1e9, 3),
                              retransmits=end.get("sum_sent", {}).get("retransmits"), mtu=mtu))
    if udp:
        got = _client(provider, node, pod, server, ["-u", "-b", "0", "-l", "1200"])["end"]["sum"]
        out.append(Throughput(path, "udp", 1, round(got["bits_per_second"] / 1e9, 3),
                              lost_pct=round(float(got.get("lost_percent", 0.0)), 2), mtu=mtu))
    return out


def mtu_of(provider: Provider, node: str, pod: str) -> int | None:
    """The MTU of the pod's eth0 (what the CNI gave the path), asked over netlink inside the
    pod: the node's /sys shows the node's own interfaces whichever netns reads it."""
    res = provider.exec(node, [*AGENT_CMD, "pod", "exec", pod, "--", "ip", "-o", "link",
                               "show", "dev", "eth0"])
    words = res.stdout.split()
    mtu = words[words.index("mtu") + 1] if "mtu" in words[:-1] else ""
    return int(mtu) if mtu.isdigit() else None
