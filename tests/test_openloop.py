"""vegeta's output as the sweep reads it, the sweep's fractions and its scenario block."""

from __future__ import annotations

import json

import pytest

from testbed.analysis import sweep
from testbed.errors import StepError, UserError
from testbed.load import openloop
from testbed.load.locust import Place
from testbed.scenario import validate


def _stat(utime: int, stime: int) -> str:
    """/proc/PID/stat after `) `: state is field 3, utime 14, stime 15 (52 fields in all)."""
    fields = ["S"] + ["0"] * 49
    fields[14 - 3], fields[15 - 3] = str(utime), str(stime)
    return " ".join(fields)


def _report(**over: object) -> str:
    doc = {"latencies": {"total": 0, "mean": 1_500_000, "50th": 412_345, "90th": 1_234_567,
                         "95th": 2_000_000, "99th": 9_876_543, "max": 30_000_000,
                         "min": 100_000},
           "requests": 3000, "rate": 1000.2, "throughput": 990.4, "success": 0.99,
           "status_codes": {"200": 2970, "503": 20, "0": 10},
           "errors": ["Get \"http://10.96.0.10:80/\": context deadline exceeded "
                      "(Client.Timeout exceeded while awaiting headers)",
                      "503 Service Unavailable"]}
    doc.update(over)
    return json.dumps(doc)


HDR = """Value(ms)   Percentile  TotalCount  1/(1-Percentile)
0.100000    0.000000    0           1.000000
0.412345    0.500000    1500        2.000000
9.876543    0.990000    2970        100.000000
20.000000   0.998828    2996        853.242321
22.000000   0.999023    2997        1023.541453
30.000000   1.000000    3000        10000000.000000
"""


def _output(cpu_ticks: list[tuple[float, int]], report: str = "") -> str:
    lines = [f"cpu {t} 100 {_stat(ticks, 0)}" for t, ticks in cpu_ticks]
    return "\n".join([*lines, "rc 0", "--json", report or _report(), "", "--hdr", HDR])


def test_cpu_series_is_percent_of_one_core_per_interval() -> None:
    out = _output([(10.0, 100), (10.5, 125), (11.0, 175)]).splitlines()
    assert openloop.cpu_series(out) == [50.0, 100.0]
    assert openloop.cpu_series(["rc 0", "cpu 1 100 too short"]) == []


def test_p999_interpolates_between_the_hdr_rows_around_it() -> None:
    # 0.999 lies 88% of the way from 0.998828 to 0.999023
    assert openloop.p999(HDR) == pytest.approx(20.0 + 2.0 * (0.999 - 0.998828) / 0.000195,
                                               abs=1e-3)
    assert openloop.p999("") == 0.0


def test_parse_reads_rates_percentiles_in_microseconds_and_error_kinds() -> None:
    p = openloop.parse("pod-to-service", 1000, _output([(1.0, 0), (1.5, 10), (2.0, 20)]))
    assert (p.offered_rps, p.sent_rps, p.achieved_rps) == (1000, 1000.2, 990.4)
    assert (p.p50_ms, p.p90_ms, p.p99_ms) == (0.412, 1.235, 9.877)  # ns -> ms, 3 decimals
    assert 20.0 < p.p999_ms < 22.0
    assert p.requests == 3000 and p.error_share == pytest.approx(0.01)
    assert p.errors == {"http_503": 20, "timeout": 10}
    assert (p.generator_cpu_max, p.generator_cpu_mean, p.generator_bound) == (20.0, 20.0, False)
    assert p.held  # 990.4 of 1000 offered: within 5%


def test_held_is_achieved_within_five_percent_of_offered() -> None:
    assert sweep.Point(1000, 950, 1.0).held
    assert not sweep.Point(1000, 949, 1.0).held


def test_a_saturated_generator_marks_the_point_generator_bound() -> None:
    busy = _output([(1.0, 0), (1.5, 46), (2.0, 92)])  # 92% of one core
    assert openloop.parse("nodeport", 500, busy).generator_bound
    # a pacer behind the offered rate with CPU to spare is the path, not the generator
    slow = openloop.parse("nodeport", 5000, _output([(1.0, 0), (1.5, 10)]))
    assert not slow.generator_bound and not slow.held
    assert openloop.judge([]) == (False, 0.0, 0.0)


def test_transport_errors_are_named_by_kind_and_a_missing_report_fails_in_one_line() -> None:
    assert openloop.error_kinds({"0": 5}, ["dial tcp 10.0.0.1:80: connect: connection "
                                           "refused"]) == {"connection_refused": 5}
    assert openloop.error_kinds({"200": 5, "301": 1}, []) == {}
    with pytest.raises(StepError, match="vegeta printed no report"):
        openloop.parse("ingress", 100, "rc 0\n")


def test_a_ceiling_run_takes_what_was_sent_as_offered() -> None:
    p = openloop.parse("ingress", 0, _output([(1.0, 0)], _report(rate=12345.6)))
    assert p.offered_rps == 12345.6


def test_targets_are_vegeta_http_format_with_headers_under_each_request() -> None:
    t = openloop.Target(Place("outside"), ("http://a/", "http://b/"), (("Host", "h.local"),))
    assert t.text() == "GET http://a/\nHost: h.local\n\nGET http://b/\nHost: h.local\n"


def test_steps_spread_evenly_up_to_120_percent() -> None:
    assert sweep.fractions(12) == sweep.DEFAULT_FRACTIONS
    assert sweep.fractions(6) == (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
    with pytest.raises(ValueError):
        sweep.fractions(0)


def test_scenario_sweep_block_defaults_and_one_line_refusals() -> None:
    spec = validate({}, "s.yaml").sweep
    assert spec.enabled and spec.p99_ms == 10.0 and len(spec.plan_fractions()) == 6
    assert validate({"sweep": {"fractions": [0.5, 1.0]}}, "s.yaml").sweep.plan_fractions() \
        == (0.5, 1.0)
    for bad, said in [({"fractions": [0.5, 0.2]}, "does not rise"),
                      ({"fractions": [0.1], "steps": 3}, "both given"),
                      ({"step_s": 0}, "sweep.step_s"), ({"p99_ms": -1}, "sweep.p99_ms"),
                      ({"bogus": 1}, "sweep.bogus")]:
        with pytest.raises(UserError, match=said) as e:
            validate({"sweep": bad}, "s.yaml")
        assert "\n" not in str(e.value) and "allowed" in str(e.value)


def test_the_report_plots_ranked_points_per_path_and_notes_generator_bound_ones() -> None:
    from testbed.reports import html, sweeps

    def pt(rate: float, p99: float, bound: bool = False) -> dict[str, object]:
        return sweep.Point(rate, rate, p99, bound, errors={"timeout": 2} if bound else {}
                           ).summary()

    s = {"sweeps": {"pod-to-service": {"p99_objective_ms": 10.0, "knee_rps": 200.0,
                                       "points": [pt(100, 1.0), pt(200, 2.0), pt(300, 50, True)]},
                    "ingress": {"p99_objective_ms": 10.0, "knee_rps": None,
                                "points": [pt(50, 20.0)]}}}
    (sec,) = sweeps.sections(s, "r1-")
    chart = sec.charts[0]
    assert [x.name for x in chart.series] == ["pod-to-service", "ingress", "p99 objective 10 ms"]
    assert chart.series[0].points == [(100.0, 1.0), (200.0, 2.0)]
    assert "pod-to-service 300" in chart.note and chart.log_y
    assert sec.tables[0].rows[1][1] is None  # ingress: no knee
    assert "timeout 2" in sec.tables[1].rows[2]
    drawn = html.chart(chart)
    assert drawn.count('data-series="pod-to-service"') >= 1 and 'data-kind="line"' in drawn
    assert sweeps.sections({}) == []
