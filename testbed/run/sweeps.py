"""`run`'s open-loop sweep: per path, its ceiling, the generator's own ceiling, offered rates
up to past the ceiling, the latency-versus-load curve and the knee under the p99 objective."""

from __future__ import annotations

import time
from typing import Any, Protocol

from testbed import console
from testbed.analysis.sweep import Point, knee, plan
from testbed.errors import StepError
from testbed.load import openloop
from testbed.load.locust import Place
from testbed.provider.base import Provider
from testbed.run import targets
from testbed.scenario import Scenario
from testbed_contract.node import WORKLOAD_MODULE


class Run(Protocol):
    """What of pipeline.Run a sweep uses (the pipeline imports this module, not the reverse)."""

    provider: Provider
    scenario: Scenario
    name: str
    load_s: float

    def record(self, section: str, rows: Any) -> None: ...

LOOPBACK_PORT = 18081  # the loopback nginx the outside client's generator ceiling is taken on
CEILING_HOW = (f"vegeta -rate=0 -max-workers={openloop.CEILING_WORKERS} (closed loop, as fast "
               "as the path answers)")


def _loopback(provider: Provider, place: Place) -> openloop.Target:
    """A server on 127.0.0.1 beside the generator: the pod's own nginx, or one started in the
    outside client (which has no workload of its own)."""
    if place.pod:
        return openloop.Target(place, ("http://127.0.0.1:8080/",))
    url = f"http://127.0.0.1:{LOOPBACK_PORT}/"
    provider.spawn(place.container, ["python3", "-m", WORKLOAD_MODULE, "--server", "nginx",
                                     "--port", str(LOOPBACK_PORT), "--pod", "outside",
                                     "--container", "loopback"])
    res = provider.exec(place.container, ["sh", "-c", "for i in $(seq 50); do curl -fso "
                                          f"/dev/null {url} && exit 0; sleep 0.1; done; exit 1"])
    if res.exit_code != 0:
        raise StepError(f"the loopback nginx in {place} did not answer on {url}")
    return openloop.Target(place, (url,))


def sweep_path(provider: Provider, path: str, target: openloop.Target,
               fractions: tuple[float, ...], step_s: float, ceiling_s: float,
               p99_ms: float, generator_ceiling: Point) -> dict[str, Any]:
    """The ceiling, then one constant-rate step per planned rate, and the knee."""
    ceiling = openloop.attack(provider, path, target, 0, ceiling_s)
    if ceiling.achieved_rps <= 0:
        raise StepError(f"{path}: the ceiling run got no answers ({ceiling.errors})")
    rates = plan(ceiling.achieved_rps, fractions)
    console.progress(f"ceiling {ceiling.achieved_rps:g} rps; offering {len(rates)} rates "
                     f"{rates[0]:g}..{rates[-1]:g} rps, {step_s:g}s each")
    points = openloop.attack_steps(provider, path, target, rates, step_s)
    for p in points:
        console.progress(f"{p.offered_rps:g} rps offered: {p.achieved_rps:g} achieved, p99 "
                         f"{p.p99_ms:g} ms{' (generator-bound)' if p.generator_bound else ''}")
    best = knee(points, p99_ms)
    return {"ceiling_rps": ceiling.achieved_rps, "ceiling_how": CEILING_HOW,
            "ceiling_generator_bound": ceiling.generator_bound,
            "ceiling_p99_ms": ceiling.p99_ms,
            "generator_ceiling_rps": generator_ceiling.achieved_rps,
            "generator": str(target.place), "p99_objective_ms": p99_ms,
            "step_s": step_s, "knee_rps": best.offered_rps if best else None,
            "points": [p.summary() for p in points]}


def sweep(run: Run) -> None:
    """Each path under test swept with vegeta (see testbed/load/openloop.py)."""
    conf = run.scenario.sweep
    if not conf.enabled:
        console.info(" · sweep: off (--no-sweep or sweep.enabled: false)")
        return
    generator: dict[str, Point] = {}
    fractions = conf.plan_fractions()
    start = time.monotonic()
    try:
        _each(run, fractions, generator)
    finally:
        run.load_s += time.monotonic() - start


def _each(run: Run, fractions: tuple[float, ...], generator: dict[str, Point]) -> None:
    conf = run.scenario.sweep
    for path in run.scenario.load.paths:
        place = targets.generator_place(run.provider, run.name, run.scenario, path)
        http = targets.http_target(run.provider, run.name, run.scenario, path)
        target = openloop.Target(place, tuple(http["urls"]),
                                 tuple(http.get("headers", {}).items()))
        with console.step(f"Sweep: {path} ({len(fractions)} steps x {conf.step_s:g}s, "
                          f"p99 objective {conf.p99_ms:g} ms)"):
            if str(place) not in generator:
                generator[str(place)] = openloop.attack(
                    run.provider, "loopback", _loopback(run.provider, place), 0, conf.ceiling_s)
            row = sweep_path(run.provider, path, target, fractions, conf.step_s,
                             conf.ceiling_s, conf.p99_ms, generator[str(place)])
            run.record("sweeps", {path: row})
            knee_txt = f"{row['knee_rps']:g} rps" if row["knee_rps"] else "none held"
            console.info(f"   {path}: ceiling {row['ceiling_rps']:g} rps (generator "
                         f"{row['generator_ceiling_rps']:g}), knee {knee_txt}")
