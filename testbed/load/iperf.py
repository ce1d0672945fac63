"""Throughput like knb: iperf3 TCP (one and several streams) and UDP between pods."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from testbed.errors import StepError
from testbed.provider.base import Provider
from testbed_contract.node import in_pod

SECONDS = 3
STREAMS = 4
UDP_RATE = "1G"  # a set rate, so the loss at that rate is the figure (InfraBuilder's way)


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
    # iperf3's own CPU use (its JSON `cpu_utilization_percent`), client and server side.
    sender_cpu_pct: float | None = None
    receiver_cpu_pct: float | None = None
    generator_bound: bool | None = None  # the sending iperf3 used a whole core

    def summary(self) -> dict[str, Any]:
        """The `throughput[]` entry of summary.json."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


PORT = 5201  # the scenario's iperf pod
NODE_PORT = 5202  # a server in a node's own network namespace (the no-CNI floor)


def _client(provider: Provider, node: str, pod: str | None, server: str,
            extra: list[str], port: int = PORT, seconds: int = SECONDS) -> dict[str, Any]:
    argv = ["iperf3", "-c", server, "-p", str(port), "-t", str(seconds), "-J", *extra]
    res = provider.exec(node, in_pod(pod, argv))
    where = pod or node
    try:
        data: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError as e:
        raise StepError(f"iperf3 from {where} to {server}: {res.stderr.strip()[-300:]}") from e
    if "error" in data:
        raise StepError(f"iperf3 from {where} to {server}: {data['error']}")
    return data


BOUND_PCT = 95.0  # iperf3 sends from one thread: at a whole core the sender is the limit


def _cpu(data: dict[str, Any]) -> dict[str, Any]:
    cpu = data.get("end", {}).get("cpu_utilization_percent") or {}
    if "host_total" not in cpu:
        return {}
    sender, receiver = round(float(cpu["host_total"]), 1), round(float(cpu["remote_total"]), 1)
    return {"sender_cpu_pct": sender, "receiver_cpu_pct": receiver,
            "generator_bound": sender >= BOUND_PCT}


def measure(provider: Provider, node: str, pod: str | None, path: str, server: str,
            mtu: int | None = None, udp: bool = True, port: int = PORT,
            seconds: int = SECONDS) -> list[Throughput]:
    """TCP 1 stream, TCP N streams and (unless `udp` is False) UDP from a pod (or, with `pod`
    None, the node's own network namespace) to `server`."""
    out = []
    for streams in (1, STREAMS):
        data = _client(provider, node, pod, server, ["-P", str(streams)], port, seconds)
        end = data["end"]
        sent = end["sum_received"]
        out.append(Throughput(path, "tcp", streams, round(sent["bits_per_second"] / 1e9, 3),
                              retransmits=end.get("sum_sent", {}).get("retransmits"), mtu=mtu,
                              **_cpu(data)))
    if udp:
        data = _client(provider, node, pod, server, ["-u", "-b", UDP_RATE, "-l", "1200"],
                       port, seconds)
        got = data["end"]["sum"]
        out.append(Throughput(path, "udp", 1, round(got["bits_per_second"] / 1e9, 3),
                              lost_pct=round(float(got.get("lost_percent", 0.0)), 2), mtu=mtu,
                              **_cpu(data)))
    return out


def mtu_of(provider: Provider, node: str, pod: str) -> int | None:
    """The MTU of the pod's eth0 (what the CNI gave the path), asked over netlink inside the
    pod: the node's /sys shows the node's own interfaces whichever netns reads it."""
    res = provider.exec(node, in_pod(pod, ["ip", "-o", "link", "show", "dev", "eth0"]))
    return _mtu(res.stdout)


def mtu_of_node(provider: Provider, node: str, toward: str) -> int | None:
    """The MTU of the node's interface that routes to `toward` (the host path's)."""
    words = provider.exec(node, ["ip", "-o", "route", "get", toward]).stdout.split()
    if "dev" not in words[:-1]:
        return None
    dev = words[words.index("dev") + 1]
    return _mtu(provider.exec(node, ["ip", "-o", "link", "show", "dev", dev]).stdout)


def _mtu(text: str) -> int | None:
    words = text.split()
    mtu = words[words.index("mtu") + 1] if "mtu" in words[:-1] else ""
    return int(mtu) if mtu.isdigit() else None
