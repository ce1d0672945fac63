"""`python -m testbed.bench.sweep --cni C [--name N]`: ceilings (vegeta vs wrk) and a sweep.

One default-scenario cluster: from the client pod where the sweeps' generator runs, the
container-to-container ceiling (nginx on 127.0.0.1) with wrk and with vegeta (vegeta's number is
the generator ceiling), the same two on pod-to-service, then `run`'s sweep of every path under
test with the scenario's `sweep:` settings. Prints JSON; the cluster is always removed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import uuid
from typing import Any

from testbed.load import openloop
from testbed.provider.base import Provider
from testbed.provider.docker import DockerProvider
from testbed.run import sweeps, targets
from testbed.scenario import Scenario, load

SECONDS = 5
WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")


class Recorder:
    """The parts of pipeline.Run a sweep uses, kept in memory."""

    def __init__(self, provider: Provider, scenario: Scenario, name: str) -> None:
        self.provider: Provider = provider
        self.scenario, self.name, self.load_s = scenario, name, 0.0
        self.sweeps: dict[str, Any] = {}

    def record(self, section: str, rows: Any) -> None:
        """Keep the `sweeps` rows."""
        self.sweeps.update(rows)


def _wrk(provider: Provider, target: openloop.Target) -> float:
    res = provider.exec(target.place.container, target.place.argv(
        ["wrk", "-t1", f"-c{openloop.CEILING_WORKERS}", f"-d{SECONDS}s", target.urls[0]]))
    found = WRK_RATE.search(res.stdout)
    return float(found.group(1)) if found else 0.0


def measure(provider: Provider, name: str, spec: Scenario) -> dict[str, Any]:
    """wrk and vegeta ceilings on loopback and pod-to-service, then the sweep."""
    place = targets.generator_place(provider, name, spec, "pod-to-service")
    loop = openloop.Target(place, ("http://127.0.0.1:8080/",))
    svc = openloop.Target(place, tuple(
        targets.http_target(provider, name, spec, "pod-to-service")["urls"]))
    out: dict[str, Any] = {"generator": str(place), "seconds": SECONDS,
                           "connections": openloop.CEILING_WORKERS, "vegeta_cpus": openloop.CPUS}
    for label, target in (("container-to-container", loop), ("pod-to-service", svc)):
        v = openloop.attack(provider, label, target, 0, SECONDS)
        out[label] = {"wrk_rps": _wrk(provider, target), "vegeta_rps": v.achieved_rps,
                      "vegeta_cpu_max": v.generator_cpu_max,
                      "vegeta_generator_bound": v.generator_bound}
    rec = Recorder(provider, spec, name)
    sweeps.sweep(rec)
    out["sweeps"] = {p: {k: r[k] for k in ("ceiling_rps", "generator_ceiling_rps", "knee_rps")}
                     | {"points": [(x["offered_rps"], x["achieved_rps"], x["p99_ms"],
                                    x["generator_bound"]) for x in r["points"]]}
                     for p, r in rec.sweeps.items()}
    return out


def main() -> None:
    """Up, measure, print JSON, down."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.sweep", description=__doc__)
    ap.add_argument("--cni", default="flannel:vxlan")
    ap.add_argument("--name", default=f"bench-sweep-{uuid.uuid4().hex[:6]}")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "testbed"]
    try:
        subprocess.run([*cli, "up", "--cni", args.cni, "--name", args.name], check=True,
                       capture_output=True, text=True)
        doc = measure(DockerProvider(), args.name, load(None))
        print(json.dumps({"cni": args.cni, **doc}, indent=1))
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"up {args.cni} failed: {(e.stderr or '').strip()[-400:]}") from e
    finally:
        subprocess.run([*cli, "down", args.name], capture_output=True)


if __name__ == "__main__":
    main()
