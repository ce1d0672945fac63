"""Round-trip latency the way netperf's TCP_RR and TCP_CRR measure it, in microseconds.

RR: Debian's sockperf in ping-pong mode (one TCP connection, one message in flight, the
full round trip timed per message). CRR: wrk with `Connection: close`, one connection at a time
(connect, request, response, close per transaction) against the pod's nginx; its rate is the
transactions per second, its percentiles time request to response.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from testbed.errors import StepError
from testbed.provider.base import Provider
from testbed_contract.node import in_pod

RR_PORT = 11111  # the scenario's sockperf server container listens here
SECONDS = 3

_SOCKPERF_PCT = re.compile(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)")
_SOCKPERF_VALID = re.compile(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=\d+; "
                             r"ReceivedMessages=(\d+)")
_WRK_PCT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


@dataclass(frozen=True)
class Latency:
    """One RR or CRR measurement on one path."""

    path: str
    kind: str  # "rr" or "crr"
    tool: str
    rate_per_s: float  # transactions per second (one in flight)
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float | None  # wrk prints no 99.9th percentile
    generator_cpu_pct: float | None = None  # the client's CPU over its run, % of one core
    generator_bound: bool | None = None  # the client used a whole core: never ranked

    def summary(self) -> dict[str, Any]:
        """A plain row for JSON and the tables."""
        return asdict(self)


BOUND_PCT = 95.0  # sockperf and wrk -t1 are one thread: at a whole core the client is the limit
_RUSAGE = re.compile(r'^\{"rusage": .*\}$', re.M)


def watched(found: Latency, stderr: str) -> Latency:
    """The measurement with its client's CPU (from the agent's rusage line), if reported."""
    m = _RUSAGE.findall(stderr)
    if not m:
        return found
    use = json.loads(m[-1])["rusage"]
    pct = round(100.0 * use["cpu_s"] / use["wall_s"], 1) if use["wall_s"] > 0 else 0.0
    return replace(found, generator_cpu_pct=pct, generator_bound=pct >= BOUND_PCT)


def parse_sockperf(path: str, out: str) -> Latency:
    """sockperf ping-pong --full-rtt's summary: percentiles in usec, messages in the window."""
    pct = {float(p): float(v) for p, v in _SOCKPERF_PCT.findall(out)}
    valid = _SOCKPERF_VALID.search(out)
    if not pct or valid is None or 50.0 not in pct:
        raise StepError(f"sockperf on {path} printed no percentiles: {out.strip()[-300:]}")
    seconds, received = float(valid.group(1)), int(valid.group(2))
    return Latency(path, "rr", "sockperf", round(received / seconds, 1), pct[50.0],
                   pct[90.0], pct[99.0], pct.get(99.9))


def parse_wrk(path: str, out: str) -> Latency:
    """wrk --latency's distribution (to microseconds) and its request rate."""
    pct = {int(p): float(v) * _UNIT_US[u] for p, v, u in _WRK_PCT.findall(out)}
    rate = _WRK_RATE.search(out)
    if rate is None or 50 not in pct:
        raise StepError(f"wrk on {path} printed no latency distribution: {out.strip()[-300:]}")
    return Latency(path, "crr", "wrk", float(rate.group(1)), pct[50], pct[90], pct[99], None)


def rr(provider: Provider, node: str, pod: str | None, path: str, ip: str,
       port: int = RR_PORT, seconds: int = SECONDS) -> Latency:
    """TCP request/response round trips from a pod (or the node) to ip:port."""
    res = provider.exec(node, in_pod(pod, rusage=True, argv=[
        "sockperf", "ping-pong", "--tcp", "-i", ip, "-p", str(port), "-t", str(seconds),
        "--full-rtt"]))
    return watched(parse_sockperf(path, res.stdout + res.stderr), res.stderr)


def crr(provider: Provider, node: str, pod: str | None, path: str, url: str,
        seconds: int = SECONDS) -> Latency:
    """A new TCP connection per HTTP request, one at a time, from a pod (or the node)."""
    res = provider.exec(node, in_pod(pod, rusage=True, argv=[
        "wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", "-H", "Connection: close", url]))
    return watched(parse_wrk(path, res.stdout), res.stderr)
