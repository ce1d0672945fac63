"""The scale benchmark's parts that need no engine: its scenario, convergence rules, table
and plots, the step runner's timings and the readiness poll's back-off."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections import Counter

import pytest

from testbed.analysis.sweep import Point
from testbed.bench import converge, footprint
from testbed.bench.scale import counts, spec_for
from testbed.bench.scaleplot import plots, table
from testbed.errors import StepError, UserError
from testbed.lifecycle import pipeline, wait


def test_the_scenario_puts_the_same_number_of_pods_on_every_node() -> None:
    spec = spec_for("calico", "bgp", 10, 30)
    assert spec.edge is False and not spec.services
    assert Counter(node for _, node, _ in spec.pods()) == {n: 30 for n in range(1, 11)}
    assert len({pod for pod, _, _ in spec.pods()}) == 300


@pytest.mark.parametrize("text", ["", "3,x", "1", "3,17"])
def test_bad_node_counts_are_refused(text: str) -> None:
    with pytest.raises(UserError, match="allowed: comma-separated integers 2 to 16"):
        counts(text)
    assert counts("3,5,10") == [3, 5, 10]


def test_bad_input_exits_2_in_one_line() -> None:
    res = subprocess.run([sys.executable, "-m", "testbed.bench.scale", "--nodes", "0"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "allowed:" in res.stderr


def test_a_route_covers_a_block_only_when_it_is_not_a_blackhole() -> None:
    routes = [{"dst": "10.244.1.0/24", "dev": "flannel.1"},
              {"dst": "10.48.7.64/26", "type": "blackhole"}, {"dst": "default"}]
    assert converge._covered(routes, "10.244.1.0/24")
    assert not converge._covered(routes, "10.244.2.0/24")
    assert not converge._covered(routes, "10.48.7.64/26")  # calico's own block: not a route


def test_table_and_plots_show_every_size_and_an_error() -> None:
    rows = [{"cni": "calico:bgp", "nodes": n, "pods": 30 * n, "up_s": 2.0 * n,
             "floor_up_s": 0.5, "up_over_floor": 4.0 * n, "control_plane_s": 3.0 * n,
             "check_passed_s": 4.0 * n, "control_plane": {"bgp_established": n * (n - 1),
                                                           "bgp_expected": n * (n - 1)},
             "per_node": [{"cni_mem_mib": 100.0, "cni_cpu_pct": 5.0}]} for n in (3, 5)]
    rows.append({"cni": "calico:bgp", "nodes": 10, "pods": 300, "error": "StepError: boom"})
    text = table(rows)
    assert "20/20" in text and "6/6" in text and "ERROR: StepError: boom" in text
    svgs = plots(rows)
    assert set(svgs) == {"up.svg", "convergence.svg", "up-over-floor.svg", "up-cpu-per-pod.svg",
                         "cni-cpu.svg"}
    assert all(s.lstrip().startswith("<svg") or "<svg" in s[:400] for s in svgs.values())
    assert 'data-series="calico:bgp control plane"' in svgs["convergence.svg"]


def test_the_step_runner_reports_each_step_s_wall_time() -> None:
    timings: list[tuple[str, float]] = []
    steps = [pipeline.Step("one", lambda _: time.sleep(0.05), quiet=True),
             pipeline.Step("two", lambda _: None, quiet=True)]
    pipeline.run(steps, None, timings)
    assert [t for t, _ in timings] == ["one", "two"]
    assert timings[0][1] >= 0.05 and timings[1][1] < 0.05


def test_the_readiness_poll_backs_off_to_its_cap() -> None:
    seen: list[float] = []

    def check() -> bool:
        seen.append(time.monotonic())
        return len(seen) == 5

    wait.until(check, 5, "five looks", interval=0.01, max_interval=0.04)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert gaps[0] < 0.03 and all(g >= 0.035 for g in gaps[2:])
    with pytest.raises(StepError, match="timed out after 0s waiting for never"):
        wait.until(lambda: False, 0.05, "never", interval=0.01, max_interval=0.02)


def test_the_load_ring_sends_from_every_node_to_the_next() -> None:
    pods = [{"name": f"p{n}-{i}", "node": f"c-node-{n}", "ip": f"10.0.{n}.{i}/24"}
            for n in (1, 2, 3) for i in range(7)]
    pods.append({"name": "unaddressed", "node": "c-node-4", "ip": None})
    ring = footprint.ring(pods)
    assert [(t.place.container, t.place.pod) for t in ring] == [
        ("c-node-1", "p1-0"), ("c-node-2", "p2-0"), ("c-node-3", "p3-0")]
    assert ring[0].urls[0] == "http://10.0.2.0:8080/"
    assert len(ring[0].urls) == footprint.URLS_PER_TARGET
    assert {u.split(".")[2] for u in ring[2].urls} == {"1"}  # the last node's go to the first
    assert footprint.ring(pods[:7]) == []  # one node: no ring


def test_the_ring_adds_up_as_one_load() -> None:
    a = Point(100, 98, 4.0, requests=1000, error_share=0.0)
    b = Point(100, 90, 9.0, requests=1000, error_share=0.1, errors={"timeout": 100},
              generator_bound=True)
    load = footprint.combine([a, b])
    assert load["offered_rps"] == 200 and load["achieved_rps"] == 188
    assert load["error_share"] == 0.05 and load["errors"] == {"timeout": 100}
    assert load["p99_ms_max"] == 9.0 and load["generator_bound"] is True


def test_the_table_and_plot_show_the_daemons_idle_and_under_load() -> None:
    row = {"cni": "flannel:vxlan", "nodes": 3, "pods": 9,
           "per_node": [{"cni_mem_mib": 10.0, "cni_cpu_pct": 1.0},
                        {"cni_mem_mib": 12.0, "cni_cpu_pct": 3.0}],
           "loaded": {"per_node": [{"cni_mem_mib": 11.0, "cni_cpu_pct": 4.0}],
                      "load": {"achieved_rps": 199.5}}}
    cells = dict(zip(table([row]).splitlines()[0].split(), table([row]).splitlines()[1].split(),
                     strict=True))
    assert cells["cni_mem_mib"] == "11.0" and cells["cni_cpu_pct"] == "2.0"
    assert cells["load_rps"] == "199.5" and cells["cni_cpu_pct_load"] == "4.0"
    assert 'data-series="flannel:vxlan loaded"' in plots([row])["cni-cpu.svg"]
