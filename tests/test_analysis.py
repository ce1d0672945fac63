"""Statistics over trials, the sweep planner and knee detection, against textbook values."""

from __future__ import annotations

import math

import pytest

from testbed.analysis import stats, sweep


def test_interval_is_the_student_t_interval_of_the_mean() -> None:
    # mean 2, s = 1, n = 3: t(0.975, df=2) = 4.3027 (any t table), half width 4.3027/sqrt(3)
    f = stats.figure([1.0, 2.0, 3.0])
    assert f.median == 2.0
    assert f.low == pytest.approx(2 - 4.3027 / math.sqrt(3), abs=1e-3)
    assert f.high == pytest.approx(2 + 4.3027 / math.sqrt(3), abs=1e-3)


def test_median_is_not_the_mean_and_one_trial_has_no_interval() -> None:
    f = stats.figure([1.0, 1.0, 10.0])
    assert f.median == 1.0 and f.low < 4.0 < f.high
    one = stats.figure([5.0])
    assert (one.low, one.high, one.has_interval) == (5.0, 5.0, False)
    with pytest.raises(ValueError, match="no trials"):
        stats.figure([])
    with pytest.raises(ValueError, match="finite"):
        stats.figure([1.0, math.nan])


def test_clearly_separated_trials_are_a_real_difference() -> None:
    a = stats.figure([10.0, 10.2, 9.9, 10.1])
    b = stats.figure([12.0, 12.1, 11.9, 12.2])
    v = stats.compare("flannel", a, "calico", b, better="higher")
    assert v.winner == "calico" and v.significant
    assert v.margin == pytest.approx((12.05 - 10.05) / 10.05, rel=1e-6)
    assert v.p_value is not None and v.p_value < 0.001
    # lower is better (latency): the same data picks the other one
    assert stats.compare("flannel", a, "calico", b, better="lower").winner == "flannel"


def test_overlapping_noise_is_no_difference() -> None:
    a = stats.figure([10.0, 14.0, 8.0])
    b = stats.figure([11.0, 9.0, 13.0])
    v = stats.compare("flannel", a, "calico", b, better="higher")
    assert v.winner is None and not v.significant
    assert v.reason.startswith("no difference")


def test_one_trial_gives_no_verdict() -> None:
    v = stats.compare("a", stats.figure([1.0]), "b", stats.figure([2.0]), better="higher")
    assert v.winner is None and v.p_value is None and "--trials" in v.reason


def test_sweep_plan_is_ascending_distinct_fractions_of_the_ceiling() -> None:
    assert sweep.plan(1000) == [100.0 * i for i in range(1, 13)]
    assert sweep.plan(5, [0.1, 0.2, 1.0]) == [1.0, 5.0]  # 0.5 and 1.0 both floor to 1 rps
    with pytest.raises(ValueError):
        sweep.plan(0)


def _curve(held_until: float, p99_from: float) -> list[sweep.Point]:
    out = []
    for rate in sweep.plan(1000):
        achieved = rate if rate <= held_until else held_until
        out.append(sweep.Point(rate, achieved, 2.0 if rate < p99_from else 50.0))
    return out


def test_knee_is_the_last_rate_held_under_the_objective() -> None:
    k = sweep.knee(_curve(held_until=1200, p99_from=900))
    assert k is not None and k.offered_rps == 800
    k = sweep.knee(_curve(held_until=600, p99_from=2000))
    assert k is not None and k.offered_rps == 600
    assert sweep.knee(_curve(held_until=1200, p99_from=50)) is None
    # a looser objective moves the knee up
    loose = sweep.knee(_curve(held_until=1200, p99_from=900), p99_ms=100.0)
    assert loose is not None and loose.offered_rps == 1200


def test_generator_bound_points_are_never_the_knee() -> None:
    points = [sweep.Point(100, 100, 1.0), sweep.Point(200, 200, 1.0, generator_bound=True)]
    k = sweep.knee(points)
    assert k is not None and k.offered_rps == 100


def test_flatten_names_every_metric_with_trials_in_order() -> None:
    from testbed.analysis.metrics import flatten

    summary = {
        "paths": [{"path": "pod-to-service", "requests": 100, "failures": 5, "rps": 50.0,
                   "p50_ms": 1.0, "p99_ms": 4.0, "trial": 2},
                  {"path": "pod-to-service", "requests": 100, "failures": 0, "rps": 40.0,
                   "p50_ms": 2.0, "p99_ms": 3.0, "trial": 1, "generator_bound": True}],
        "baselines": [{"path": "node-to-node", "requests": 9, "rps": 90.0},
                      {"path": "node-to-node", "protocol": "tcp", "streams": 1,
                       "gbit_s": 7.5}],
        "throughput": [{"path": "pod-to-service", "protocol": "tcp", "streams": 4,
                        "gbit_s": 3.0}],
        "latency": {"rows": [{"path": "pod-to-service", "kind": "rr", "p50_us": 40.0,
                              "trial": 1}]},
        "sweeps": {"ingress": {"knee_rps": 900.0, "trial_knees": [800.0, 900.0]}},
    }
    m = flatten(summary)
    rps = m["paths.pod-to-service.rps"]
    assert rps.values == [40.0, 50.0] and rps.better == "higher"
    assert rps.generator_bound and not rps.ranked
    assert m["paths.pod-to-service.failure_share"].values == [0.0, 0.05]
    assert not m["baselines.node-to-node.rps"].ranked
    assert not m["throughput.node-to-node.tcpx1.gbit_s"].ranked
    assert m["throughput.pod-to-service.tcpx4.gbit_s"].ranked
    assert m["latency.pod-to-service.rr.p50_us"].better == "lower"
    assert m["sweeps.ingress.knee_rps"].values == [800.0, 900.0]
    assert "latency.pod-to-service.rr.p99_us" not in m  # absent values make no metric


def _summary(rps: list[float], datapath: str, bound: bool = False) -> dict[str, object]:
    return {"datapath": datapath,
            "paths": [{"path": "pod-to-service", "requests": 1000, "failures": 0, "rps": v,
                       "trial": i + 1, "generator_bound": bound} for i, v in enumerate(rps)],
            "baselines": [{"path": "node-to-node", "requests": 9, "rps": v, "trial": i + 1}
                          for i, v in enumerate(rps)]}


def test_verdict_table_names_a_real_winner_and_its_datapath() -> None:
    from testbed.analysis.verdicts import table

    rows = {r.metric: r for r in table([
        ("flannel", _summary([100.0, 101.0, 99.0], "vxlan")),
        ("calico", _summary([150.0, 151.0, 149.0], "routed"))])}
    rps = rows["paths.pod-to-service.rps"]
    assert rps.winner == "calico" and rps.runner_up == "flannel" and rps.significant
    assert rps.why == "routed" and abs((rps.margin or 0) - 0.5) < 1e-9
    assert rps.figures["calico"].n == 3
    floor = rows["baselines.node-to-node.rps"]
    assert floor.winner is None and not floor.ranked and "floor" in floor.reason
    assert list(rows).index("paths.pod-to-service.rps") < list(rows).index(
        "baselines.node-to-node.rps")  # ranked metrics first


def test_verdict_table_says_no_difference_inside_the_noise_and_never_ranks_bound() -> None:
    from testbed.analysis.verdicts import table

    noisy = {r.metric: r for r in table([
        ("a", _summary([100.0, 140.0, 60.0], "x")), ("b", _summary([105.0, 65.0, 150.0], "y"))])}
    assert noisy["paths.pod-to-service.rps"].winner is None
    assert noisy["paths.pod-to-service.rps"].reason.startswith("no difference")
    bound = {r.metric: r for r in table([
        ("a", _summary([100.0, 101.0], "x", bound=True)), ("b", _summary([500.0, 501.0], "y"))])}
    assert bound["paths.pod-to-service.rps"].winner is None
    assert "generator-bound" in bound["paths.pod-to-service.rps"].reason


def test_compare_rotates_the_cni_order_between_trials() -> None:
    from testbed.run.compare import rotation

    cnis = ["flannel", "calico", "weave"]
    orders = [rotation(cnis, t) for t in (1, 2, 3, 4)]
    assert orders == [cnis, ["calico", "weave", "flannel"], ["weave", "flannel", "calico"], cnis]
    # over as many trials as CNIs, each CNI is measured first once and last once
    assert sorted(o[0] for o in orders[:3]) == sorted(cnis)
    assert sorted(o[-1] for o in orders[:3]) == sorted(cnis)
    assert rotation([], 2) == []


def test_cost_meter_divides_cpu_seconds_by_the_work_done() -> None:
    from testbed.load.cost import CpuMeter

    meter = CpuMeter.__new__(CpuMeter)
    meter.before = {"n1": ("node", 10.0), "c1": ("cni", 1.0), "gone": ("cni", 5.0)}
    meter.after = {"n1": ("node", 14.0), "c1": ("cni", 1.5), "new": ("node", 3.0)}
    meter.seconds = 4.0
    assert meter.spent() == {"n1": 4.0, "c1": 0.5}  # only containers read both times
    row = meter.row("pod-to-service", "requests", 2000)
    assert row is not None and row["node_cpu_s_per_1000_requests"] == 2.0
    assert row["cni_cpu_s_per_1000_requests"] == 0.25
    gbit = meter.row("pod-to-pod-cross-node", "gbit", 8.0)
    assert gbit is not None and gbit["node_cpu_s_per_gbit"] == 0.5
    assert meter.row("x", "gbit", 0.0) is None  # nothing moved: nothing to divide by


def test_faults_become_metrics_per_fault_of_the_timeline_in_trial_order() -> None:
    from testbed.analysis.metrics import flatten

    played = [{"kind": "partition", "at_s": 15.0, "failed_share": 0.02, "trial": 2,
               "new_pod": {"addressed": False}},
              {"kind": "partition", "at_s": 15.0, "failed_share": 0.01, "control_plane_s": 4.1,
               "trial": 1, "new_pod": {"addressed": True}},
              {"kind": "node-kill", "at_s": 2.5, "failed_share": 0.5, "trial": 1},
              {"fault": "skipped one", "skipped": "the load phase ended first"}]
    m = flatten({"faults": {"nodeport": played}})
    assert m["faults.nodeport.partition@15s.failed_share"].values == [0.01, 0.02]
    assert m["faults.nodeport.partition@15s.new_pod_addressed"].values == [1.0, 0.0]
    assert m["faults.nodeport.partition@15s.new_pod_addressed"].better == "higher"
    assert m["faults.nodeport.node-kill@2500ms.failed_share"].values == [0.5]
    assert m["faults.nodeport.partition@15s.control_plane_s"].values == [4.1]


def test_three_cnis_without_a_winner_still_name_the_one_behind() -> None:
    from testbed.analysis.verdicts import table

    rows = {r.metric: r for r in table([
        ("a", _summary([100.0, 102.0, 98.0], "x")), ("b", _summary([101.0, 99.0, 103.0], "y")),
        ("c", _summary([50.0, 51.0, 49.0], "z"))])}
    rps = rows["paths.pod-to-service.rps"]
    assert rps.winner is None and not rps.significant
    assert rps.reason == "no difference between b and a; c behind them, outside the noise"


def test_a_sweep_that_held_no_rate_has_a_knee_of_zero() -> None:
    from testbed.analysis.metrics import flatten

    m = flatten({"sweeps": {"ingress": {"knee_rps": None, "points": [{"offered_rps": 10}],
                                        "trial_knees": [None, 300.0]},
                            "nodeport": {"knee_rps": None, "points": []}}})
    assert m["sweeps.ingress.knee_rps"].values == [0.0, 300.0]
    assert "sweeps.nodeport.knee_rps" not in m  # a sweep that did not run says nothing


def test_a_run_keeps_every_trials_entries_of_its_dict_sections() -> None:
    from types import SimpleNamespace

    from testbed.run.pipeline import Run

    got: list[tuple[str, object]] = []
    run = Run.__new__(Run)
    run.kept, run.trial = {}, 1
    run.rundir = SimpleNamespace(record_partial=lambda s, rows: got.append((s, rows)))  # type: ignore[assignment]
    for trial, knee in ((1, 5.0), (2, None)):
        run.trial = trial
        run.record("latency", {"rows": [{"path": "a"}]})
        run.record_cost({"path": "x"})
        run.record("sweeps", {"p": {"knee_rps": knee}})
        run.record("faults", {"p": [{"kind": "partition"}]})
    last = dict(got[-4:])
    assert last["latency"] == {"rows": [{"path": "a", "trial": 1}, {"path": "a", "trial": 2}]}
    assert [r["trial"] for r in last["cost"]["rows"]] == [1, 2]  # type: ignore[index]
    assert last["sweeps"] == {"p": {"knee_rps": None, "trial": 2, "trial_knees": [5.0, None]}}
    assert last["faults"] == {"p": [{"kind": "partition", "trial": 1},
                                    {"kind": "partition", "trial": 2}]}
