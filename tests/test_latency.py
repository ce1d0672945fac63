"""RR/CRR output parsing, on output sockperf 3.7 and wrk 4.1 printed in a cluster here."""

from __future__ import annotations

import pytest

from testbed.errors import StepError
from testbed.load.latency import parse_sockperf, parse_wrk

SOCKPERF = """sockperf: == version #3.7-no.git ==
sockperf: [Total Run] RunTime=3.001 sec; Warm up time=400 msec; SentMessages=53475
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=2.550 sec; SentMessages=45033; ReceivedMessages=45033
sockperf: ====> avg-rtt=56.587 (std-dev=91.901)
sockperf: Summary: Round trip is 56.587 usec
sockperf: ---> <MAX> observation = 13452.284
sockperf: ---> percentile 99.999 = 13452.284
sockperf: ---> percentile 99.990 = 2862.629
sockperf: ---> percentile 99.900 =  772.492
sockperf: ---> percentile 99.000 =  136.904
sockperf: ---> percentile 90.000 =   59.749
sockperf: ---> percentile 75.000 =   55.582
sockperf: ---> percentile 50.000 =   49.313
sockperf: ---> percentile 25.000 =   43.454
sockperf: ---> <MIN> observation =   39.258
"""

WRK = """Running 3s test @ http://10.244.61.2:8080/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   405.05us    0.94ms  13.94ms   90.74%
    Req/Sec     3.18k     1.02k    4.22k    70.00%
  Latency Distribution
     50%   99.00us
     75%  128.00us
     90%    1.23ms
     99%    4.26ms
  9505 requests in 3.01s, 2.67MB read
Requests/sec:   3157.52
Transfer/sec:      0.89MB
"""


def test_sockperf_percentiles_and_rate_come_from_the_valid_window() -> None:
    m = parse_sockperf("pod-to-pod-cross-node", SOCKPERF)
    assert (m.kind, m.tool) == ("rr", "sockperf")
    assert (m.p50_us, m.p90_us, m.p99_us, m.p999_us) == (49.313, 59.749, 136.904, 772.492)
    assert m.rate_per_s == round(45033 / 2.550, 1)  # the warm-up is not counted


def test_wrk_units_are_normalised_to_microseconds() -> None:
    m = parse_wrk("pod-to-pod-cross-node", WRK)
    assert (m.kind, m.rate_per_s) == ("crr", 3157.52)
    assert (m.p50_us, m.p90_us, m.p99_us) == (99.0, 1230.0, 4260.0)
    assert m.p999_us is None


def test_output_without_figures_is_a_step_error_naming_the_path() -> None:
    with pytest.raises(StepError, match="loopback"):
        parse_sockperf("loopback", "sockperf: connect failed: Connection refused")
    with pytest.raises(StepError, match="pod-to-service"):
        parse_wrk("pod-to-service", "unable to connect to 10.96.0.10:80 Connection refused")


def test_the_client_cpu_is_read_from_the_agent_rusage_line() -> None:
    from testbed.load.latency import Latency, watched

    found = Latency("pod-to-service", "rr", "sockperf", 20000.0, 40.0, 50.0, 60.0, 90.0)
    busy = watched(found, 'sockperf: done\n{"rusage": {"cpu_s": 2.91, "wall_s": 3.0}}\n')
    assert busy.generator_cpu_pct == 97.0 and busy.generator_bound is True
    idle = watched(found, '{"rusage": {"cpu_s": 0.6, "wall_s": 3.0}}')
    assert idle.generator_cpu_pct == 20.0 and idle.generator_bound is False
    assert watched(found, "no rusage line here").generator_bound is None
