"""Open-loop HTTP load at a constant rate with vegeta, its own CPU watched while it runs.

vegeta keeps its schedule whatever the response times (a new worker for each request that
would wait, up to MAX_WORKERS), so a slow answer never delays the next request: no coordinated
omission below the point where all workers wait, and such a step is never held. Its
JSON report gives the rates and p50/p90/p99 in nanoseconds, its HDR plot report the 99.9th
percentile; both come from the same per-request results file. A shell wrapper samples the
generator's CPU from /proc every half second while it runs.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from typing import Any

from testbed.analysis.sweep import Point
from testbed.errors import StepError
from testbed.load.locust import GENERATOR_BOUND_PCT, Place
from testbed.provider.base import Provider
from testbed_contract import errkind

CPUS = 1  # vegeta's GOMAXPROCS: saturation is then 90% of one core, as for a Locust worker
CEILING_WORKERS = 64  # concurrency of an unbounded-rate (closed-loop) ceiling run
# Workers (each one request in flight on its own keep-alive connection) at a set rate. Unbounded,
# one stall makes vegeta open thousands of connections at once (a SYN flood into one nginx
# worker: seconds of SYN retransmits, measured here); capped, a path that cannot keep up makes
# the pacer fall behind instead, so the step is not held (sent and achieved below offered).
MAX_WORKERS = 128
TIMEOUT_S = 2  # a request unanswered this long is an error (200x a 10 ms objective)
SAMPLE_S = 0.5
WORKDIR = "/tmp/testbed-vegeta"

# $1 workdir, $2 targets (vegeta's http format), $3 the rates, one step each ("0": as fast as
# CEILING_WORKERS go), $4 seconds per step. All steps in one exec: no per-step start-up.
SCRIPT = r"""
dir=$1; mkdir -p "$dir"; printf '%s' "$2" > "$dir/targets"; rates=$3; dur=$4
hz=$(getconf CLK_TCK)
for rate in $rates; do
  echo "--step $rate"
  if [ "$rate" = 0 ]; then flags="-rate=0 -max-workers=@CW@"
  else flags="-rate=$rate/1s -max-workers=@MW@"; fi
  vegeta -cpus=@CPUS@ attack -targets="$dir/targets" -output="$dir/results.bin" \
    -duration="$dur"s -timeout=@TO@s $flags &
  pid=$!
  while s=$(cat /proc/$pid/stat 2>/dev/null); do
    case "${s##*) }" in Z*) break;; esac
    echo "cpu $(cut -d' ' -f1 /proc/uptime) $hz ${s##*) }"
    sleep @SAMPLE@
  done
  wait $pid; rc=$?
  echo "rc $rc"
  [ $rc = 0 ] || exit $rc
  echo "--json"; vegeta report -type=json "$dir/results.bin"; echo
  echo "--hdr"; vegeta report -type=hdrplot "$dir/results.bin"
done
"""
for _k, _v in {"@CPUS@": CPUS, "@SAMPLE@": SAMPLE_S, "@CW@": CEILING_WORKERS,
               "@MW@": MAX_WORKERS, "@TO@": TIMEOUT_S}.items():
    SCRIPT = SCRIPT.replace(_k, str(_v))

_STATUS = re.compile(r"^\d{3} ")  # vegeta's message for an HTTP answer, not a transport error
_HDR_ROW = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+\d+\s+[\d.]+\s*$", re.M)


@dataclass(frozen=True)
class Target:
    """Where vegeta runs (a client pod, or the outside container) and what it asks."""

    place: Place
    urls: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """vegeta's http target format: one request per URL, round-robin, headers under it."""
        lines = []
        for url in self.urls:
            lines += [f"GET {url}", *(f"{k}: {v}" for k, v in self.headers), ""]
        return "\n".join(lines)


def cpu_series(lines: list[str]) -> list[float]:
    """CPU % of one core per sampling interval from the wrapper's `cpu UPTIME HZ STAT...`
    lines (utime and stime are /proc/PID/stat fields 14 and 15)."""
    out, prev = [], None
    for line in lines:
        f = line.split()
        if len(f) < 16 or f[0] != "cpu":
            continue
        t, hz, ticks = float(f[1]), float(f[2]), int(f[14]) + int(f[15])
        if prev is not None and t > prev[0]:
            out.append(round(100.0 * (ticks - prev[1]) / hz / (t - prev[0]), 1))
        prev = (t, ticks)
    return out


def _kind(message: str) -> str:
    """A vegeta transport error's kind, named as the locustfile names Locust's."""
    low = message.lower()
    for key, kind in (*errkind.BY_MESSAGE, ("timeout", "timeout"), ("eof", "eof")):
        if key in low:
            return kind
    return "transport"


def error_kinds(codes: dict[str, int], messages: list[str]) -> dict[str, int]:
    """Failed requests by kind: `http_<code>` for an HTTP answer outside 2xx/3xx, the
    transport error's kind (from vegeta's distinct messages) for no answer (code 0)."""
    out: dict[str, int] = {}
    for code, count in codes.items():
        if code == "0":
            kinds = sorted({_kind(m) for m in messages if not _STATUS.match(m)}) \
                or ["transport"]
            out["+".join(kinds)] = out.get("+".join(kinds), 0) + count
        elif not 200 <= int(code) < 400:
            out[f"http_{code}"] = count
    return out


def p999(hdr: str) -> float:
    """The 99.9th percentile (ms) from vegeta's HDR plot rows, interpolated between rows."""
    rows = [(float(q), float(v)) for v, q in _HDR_ROW.findall(hdr)]
    below = [r for r in rows if r[0] <= 0.999]
    above = [r for r in rows if r[0] >= 0.999]
    if not below or not above:
        return rows[-1][1] if rows else 0.0
    (q0, v0), (q1, v1) = below[-1], above[0]
    return round(v0 if q1 == q0 else v0 + (v1 - v0) * (0.999 - q0) / (q1 - q0), 3)


def judge(cpu: list[float]) -> tuple[bool, float, float]:
    """(bound, max, mean) of the generator's CPU: Locust's rule (peak 90%, or mean 72%, of
    the cores vegeta may use). A pacer behind the offered rate with CPU to spare is the path
    not keeping up (every worker waiting), which the knee reads as not held."""
    peak = max(cpu, default=0.0)
    mean = round(statistics.fmean(cpu), 1) if cpu else 0.0
    limit = GENERATOR_BOUND_PCT * CPUS
    return peak >= limit or mean >= 0.8 * limit, peak, mean


def parse(path: str, offered: float, out: str) -> Point:
    """The wrapper's output (CPU samples, vegeta's JSON and HDR reports) as one sweep point."""
    lines = out.splitlines()
    try:
        at = lines.index("--json")
        report: dict[str, Any] = json.loads(lines[at + 1])
    except (ValueError, IndexError, json.JSONDecodeError) as e:
        raise StepError(f"{path}: vegeta printed no report: {out.strip()[-300:]}") from e
    hdr = out.split("--hdr", 1)[1] if "--hdr" in out else ""
    lat = report.get("latencies", {})

    def ms(key: str) -> float:
        return round(float(lat.get(key, 0)) / 1e6, 3)  # ns -> ms, µs resolution

    sent = round(float(report.get("rate", 0.0)), 1)
    cpu = cpu_series(lines[:at])
    bound, peak, mean = judge(cpu)
    requests = int(report.get("requests", 0))
    return Point(offered_rps=offered or sent,
                 achieved_rps=round(float(report.get("throughput", 0.0)), 1),
                 p99_ms=ms("99th"), generator_bound=bound, p50_ms=ms("50th"),
                 p90_ms=ms("90th"), p999_ms=p999(hdr), sent_rps=sent, requests=requests,
                 error_share=round(1.0 - float(report.get("success", 0.0)), 4) if requests
                 else 1.0,
                 errors=error_kinds(report.get("status_codes") or {},
                                    report.get("errors") or []),
                 generator_cpu_max=peak, generator_cpu_mean=mean)


def attack_steps(provider: Provider, path: str, target: Target, rates: list[float],
                 duration_s: float) -> list[Point]:
    """vegeta at each rate in turn (requests/s) for `duration_s` each; rate 0 is as fast as
    CEILING_WORKERS connections go (a closed-loop ceiling run)."""
    argv = ["sh", "-c", SCRIPT, "sh", f"{WORKDIR}/{path}", target.text(),
            " ".join(f"{r:g}" for r in rates), f"{duration_s:g}"]
    res = provider.exec(target.place.container, target.place.argv(argv))
    if res.exit_code != 0:
        raise StepError(f"{path}: vegeta in {target.place} exited {res.exit_code}: "
                        f"{(res.stderr or res.stdout).strip()[-300:]}")
    chunks = res.stdout.split("--step ")[1:]
    if len(chunks) != len(rates):
        raise StepError(f"{path}: vegeta ran {len(chunks)} of {len(rates)} steps: "
                        f"{res.stdout.strip()[-300:]}")
    return [parse(path, rate, chunk) for rate, chunk in zip(rates, chunks, strict=True)]


def attack(provider: Provider, path: str, target: Target, rate: float, duration_s: float
           ) -> Point:
    """One step of attack_steps."""
    return attack_steps(provider, path, target, [rate], duration_s)[0]
