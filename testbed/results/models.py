"""The documented records as Pydantic models: a run summary and its rows, and `check --json`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


def baseline_kind(row: Mapping[str, Any]) -> str:
    """`throughput` (iperf3: has gbit_s) or `http` (Locust stats, whatever else `kind` says)."""
    kind = str(row.get("kind") or "")
    return "throughput" if kind in ("throughput", "iperf3") or "gbit_s" in row else "http"


class Record(BaseModel):
    """A documented record: known keys typed, any other key kept as it came."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class TrialRecord(Record):
    """A measured row: which trial of the run took it."""

    trial: int | None = Field(None, description="1..N: the trial that measured the row (`--trials "
                                                "N`; absent in runs stored before trials)")


class PathRow(TrialRecord):
    """One HTTP path under Locust load."""

    path: str = Field(description="pod-to-service, pod-to-nodeport, outside-to-ingress, ...")
    requests: int | None = Field(None, description="requests completed")
    failures: int | None = Field(None, description="requests failed")
    rps: float | None = Field(None, description="requests/s over the load phase")
    p50_ms: float | None = Field(None, description="median response time, ms")
    p90_ms: float | None = Field(None, description="90th percentile response time, ms")
    p95_ms: float | None = Field(None, description="95th percentile response time, ms")
    p99_ms: float | None = Field(None, description="99th percentile response time, ms")
    max_ms: float | None = Field(None, description="slowest response, ms")
    generator_bound: bool | None = Field(
        None, description="the load generator saturated on this path (not a CNI limit)")
    mtu: int | None = Field(None, description="bytes, if recorded on the row")


class ThroughputRow(TrialRecord):
    """One iperf3 measurement."""

    path: str = Field(description="e.g. pod-to-pod-cross-node, pod-to-service")
    protocol: str | None = Field(None, description="`tcp` or `udp`")
    streams: int | None = Field(None, description="parallel streams")
    gbit_s: float | None = Field(None, description="Gbit/s (10^9 bit/s)")
    mtu: int | None = Field(None, description="bytes, if recorded on the row")
    lost_pct: float | None = Field(None, description="UDP: datagrams lost at the set rate, %")
    retransmits: int | None = Field(None, description="TCP: segments the sender retransmitted")
    sender_cpu_pct: float | None = Field(None, description="the sending iperf3's CPU, % of one "
                                                           "core (its own report)")
    receiver_cpu_pct: float | None = Field(None, description="the receiving iperf3's CPU, %")
    generator_bound: bool | None = Field(None, description="the sender used a whole core: the "
                                                           "figure is the generator's limit, "
                                                           "never ranked")


class ResourceRow(TrialRecord):
    """One container's CPU and memory in one phase."""

    container: str = Field(description="container name")
    phase: str | None = Field(None, description="`idle` or `load`")
    cpu_pct: float | None = Field(None, description="percent of one core (200 = two cores busy)")
    mem_mib: float | None = Field(None, description="MiB (2^20 bytes)")


class BaselineRow(TrialRecord):
    """A ceiling measured the same way as the paths."""

    path: str = Field(description="`container-to-container` (localhost) or `node-to-node` "
                                  "(host network)")
    kind: str = Field(description="`http` (or the runner's name for it, e.g. `locust`) or "
                                  "`throughput` (iperf3); filled in when the row has none")
    requests: int | None = Field(None, description="requests completed (http)")
    failures: int | None = Field(None, description="requests failed (http)")
    rps: float | None = Field(None, description="requests/s (http)")
    p50_ms: float | None = Field(None, description="ms (http)")
    p90_ms: float | None = Field(None, description="ms (http)")
    p95_ms: float | None = Field(None, description="ms (http)")
    p99_ms: float | None = Field(None, description="ms (http)")
    max_ms: float | None = Field(None, description="ms (http)")
    generator_bound: bool | None = Field(None, description="the generator saturated (http)")
    protocol: str | None = Field(None, description="`tcp`/`udp` (throughput)")
    streams: int | None = Field(None, description="parallel streams (throughput)")
    gbit_s: float | None = Field(None, description="Gbit/s (throughput)")

    @model_validator(mode="before")
    @classmethod
    def _fill_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("kind"):
            return {**data, "kind": baseline_kind(data)}
        return data


class TimeseriesRow(TrialRecord):
    """One sample of one path under load."""

    path: str = Field(description="path")
    t: float = Field(description="s since that path's load started (a Unix timestamp, as in "
                                 "Locust's history CSV, is accepted; reports shift it to the "
                                 "path's first sample)")
    rps: float | None = Field(None, description="requests/s in the sample")
    p50_ms: float | None = Field(None, description="median response time, ms")
    p95_ms: float | None = Field(None, description="95th percentile response time, ms")
    failures_per_s: float | None = Field(None, description="failures/s")
    users: int | None = Field(None, description="users running")
    p99_ms: float | None = Field(None, description="99th percentile response time, ms")
    requests: int | None = Field(None, description="requests so far (cumulative)")
    failures: int | None = Field(None, description="failed requests so far (cumulative)")


ROW_MODELS: dict[str, type[Record]] = {
    "paths": PathRow, "throughput": ThroughputRow, "resources": ResourceRow,
    "baselines": BaselineRow, "timeseries": TimeseriesRow,
}


class RunSummary(Record):
    """summary.json (`run --json`). Keys with a default are always written; the others when set."""

    run_id: str = Field(description="`<UTC start>-<cni>[-<backend>]-<6 hex>`")
    cni: str = Field(description="e.g. `flannel`")
    backend: str = Field("", description="e.g. `vxlan`; `\"\"` when the CNI has none")
    build: str = Field("unknown", description="`upstream` or `source` (`unknown` if not "
                                              "recorded)")
    images: dict[str, Any] = Field(default_factory=dict, description="{role: image ref}: the "
                                                                     "image each role ran")
    duration_s: float | None = Field(0.0, description="load phase length, s")
    interrupted: bool = Field(False, description="the run was stopped (Ctrl-C, crash) before "
                                                 "it finished")
    status: str = Field("complete", description="`complete`, `interrupted` or `failed` "
                                                "(derived from `interrupted` when absent); "
                                                "`running` only in the database")
    report: str = Field("", description="path of the HTML report (`<run dir>/report.html`)")
    paths: list[PathRow] = Field(default_factory=list, description="HTTP paths under load")
    throughput: list[ThroughputRow] = Field(default_factory=list, description="iperf3 results")
    resources: list[ResourceRow] = Field(default_factory=list,
                                         description="CPU and memory per container and phase")
    baselines: list[BaselineRow] | None = Field(None, description="ceilings measured the same "
                                                                  "way as the paths")
    timeseries: list[TimeseriesRow] | None = Field(None, description="per path and sample")
    error: str | None = Field(None, description="why a `failed` run failed (shown in reports)")
    run_dir: str | None = Field(None, description="absolute path of the run directory")
    started_at: str | None = Field(None, description="UTC timestamp")
    finished_at: str | None = Field(None, description="UTC timestamp")
    scenario: Any = Field(None, description="scenario name")
    seed: int | None = Field(None, description="Locust seed")
    users: int | None = Field(None, description="Locust user count")
    spawn_rate: float | None = Field(None, description="users started per second")
    release: str | None = Field(None, description="the CNI release")
    cni_mtu: int | None = Field(None, description="the pod MTU asked of the CNI (`cni.mtu`, "
                                                  "`compare --mtu`); None: the CNI's default")
    datapath: str | None = Field(None, description="the CNI backend's datapath in one line "
                                                   "(the `why` of a verdict)")
    module: str | None = Field(None, description="the CNI's Go module")
    build_note: str | None = Field(None, description="what `--build auto` chose and why "
                                                     "(also read from `environment.build_note`)")
    environment: dict[str, Any] | None = Field(
        None, description="`kernel`, `docker_version`, `scenario_hash`, `image_digests` "
                          "{image: `sha256:...`}, `sources` {image role: {go build, "
                          "`adaptations`}} (source builds), `packages` {debian package: "
                          "version}, `release`, `module`")
    mtu: dict[str, Any] | None = Field(None, description="{path: int}: MTU of each path's "
                                                         "interface, bytes")
    latency: dict[str, Any] | None = Field(
        None, description="`rows` [{`path`, `kind` (`rr`: sockperf ping-pong, `crr`: wrk, a new "
                          "connection per request), `tool`, `rate_per_s`, `p50_us`, `p90_us`, "
                          "`p99_us`, `p999_us`, `generator_cpu_pct` (the client's CPU, % of one "
                          "core), `generator_bound` (>= 95%: never ranked), `trial`}]: round "
                          "trips in microseconds")
    cost: dict[str, Any] | None = Field(
        None, description="`rows` [{`path`, `work` (`gbit` or `requests`), `amount`, `seconds`, "
                          "`cni_cpu_s`, `node_cpu_s`, `cni_cpu_s_per_gbit` | "
                          "`cni_cpu_s_per_1000_requests`, `node_cpu_s_per_...`, `trial`}]: "
                          "CPU-seconds from the cgroup counters across each phase")
    trials: dict[str, Any] | None = Field(
        None, description="`n` trials run, `order` [[run ids in the order each trial measured "
                          "them]] (compare rotates the CNIs between trials)")
    nightly_id: str | None = Field(None, description="the night this run belongs to "
                                                    "(`python -m testbed nightly`)")
    nightly_entry: str | None = Field(None, description="its matrix entry, e.g. "
                                                        "`flannel:vxlan [light]`")
    generator: dict[str, Any] | None = Field(
        None, description="`workers` [{`worker`, `cpu_pct`, `bound`}] with `threshold_pct`, or "
                          "{path: {`cpu_max`, `cpu_mean`, `bound`, `workers`}}")
    sweeps: dict[str, Any] | None = Field(
        None, description="{path: {`ceiling_rps`, `ceiling_how`, `generator_ceiling_rps`, "
                          "`generator`, `p99_objective_ms`, `step_s`, `knee_rps` (null: no "
                          "rate held), `points` [{`offered_rps`, `achieved_rps`, `sent_rps`, "
                          "`p50_ms`, `p90_ms`, `p99_ms`, `p999_ms`, `requests`, `error_share`, "
                          "`errors` {kind: count}, `generator_bound`, `generator_cpu_max`, "
                          "`generator_cpu_mean`}], `trial`, `trial_knees` [each trial's knee]}}: "
                          "vegeta's open-loop sweep (the latest trial's), ms and rps")
    faults: dict[str, Any] | None = Field(
        None, description="{path: [per fault of the scenario's timeline: `fault`, `kind`, "
                          "`start`/`applied`/`end`/`undone` (Unix s), `apply_s`, `undo_s`, "
                          "`control_plane_s` (s from the undo until BGP sessions Established / "
                          "flannel leases and health back), `failed_share` (failed requests "
                          "in the window), `throughput_drop` (successes missing against "
                          "the pre-fault rate), `first_failure_s`, `first_success_after_s`, "
                          "`last_failure_after_s`, `p95_back_s`/`p99_back_s` (s after the "
                          "fault until within 10% of the pre-fault value; `end` is when the "
                          "undo began, `undo_s` how long it took), `error_kinds` {kind: "
                          "count} (failed requests from the fault until the next one or the "
                          "phase's end), `error`, or `skipped`]}")
    errors: dict[str, Any] | None = Field(
        None, description="{path: [per trial with failures: `from` (`errors.jsonl`: the "
                          "locustfile's counts per second; `locust_failures.csv`: Locust's "
                          "whole-phase counts, no `rows`), `kinds` {kind: count} (`http_502`, "
                          "`timeout`, `connection_refused`, `connection_reset`, "
                          "`no_route_to_host`, ... else the exception's class), `rows` [{`t` "
                          "(Unix s), `kind`, `count`}], `trial`]}: failed requests by kind")


class CheckCase(BaseModel):
    """One source -> destination probe."""

    path: str = Field(description="the path checked, e.g. pod-to-pod-cross-node")
    src: str = Field(description="where the probe ran")
    dst: str = Field(description="what it asked")
    status: str = Field(description="`pass`, `fail` or `skip`")
    reason: str = Field("", description="why it failed or was skipped")
    latency_ms: float = Field(0.0, description="median latency of the good requests, ms")


class CheckReport(BaseModel):
    """`check --json` and a run's check.json: the connectivity matrix of one cluster."""

    cluster: str = Field(description="cluster name")
    cni: str = Field(description="CNI name")
    backend: str = Field(description="backend, `\"\"` if none")
    build: str = Field(description="`upstream`, `source` or `unknown`")
    cases: list[CheckCase] = Field(description="one per probe")
