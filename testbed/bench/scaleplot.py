"""The scale benchmark's plots (up time and convergence vs node count) and its table."""

from __future__ import annotations

from collections import defaultdict
from statistics import median
from typing import Any

from testbed.reports.svg import line_chart


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """Per CNI: (node count, median of `key` over repeats), where measured."""
    by: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get(key) is not None:
            by[r["cni"]][r["nodes"]].append(float(r[key]))
    return [(cni, [(float(n), median(v)) for n, v in sorted(pts.items())])
            for cni, pts in by.items()]


def plots(rows: list[dict[str, Any]]) -> dict[str, str]:
    """File name -> SVG: `up` and the floor, and convergence, over the node count."""
    floor = [("floor (bare containers)", pts) for _, pts in _series(rows, "floor_up_s")[:1]]
    up = line_chart("up wall time vs nodes", [*_series(rows, "up_s"), *floor],
                    x_label="nodes", y_label="seconds", chart_id="scale-up",
                    note="median over repeats; floor: start as many bare node containers")
    conv = line_chart(
        "convergence vs nodes (from the start of up)",
        [*((f"{c} control plane", p) for c, p in _series(rows, "control_plane_s")),
         *((f"{c} check passes", p) for c, p in _series(rows, "check_passed_s"))],
        x_label="nodes", y_label="seconds", chart_id="scale-converge",
        note="control plane: BGP full mesh Established / flannel leases, routes, FDB")
    ratio = line_chart("up over the same-run floor", _series(rows, "up_over_floor"),
                       x_label="nodes", y_label="up / floor", chart_id="scale-ratio")
    cpu = line_chart("CPU-seconds of up per pod", _series(rows, "up_cpu_s_per_pod"),
                     x_label="nodes", y_label="CPU-s / pod", chart_id="scale-cpu",
                     note="flat = linear in pods; the cluster's containers' cgroup counters")
    daemon = line_chart(
        "CNI daemon CPU per node, idle and under load",
        [*((f"{c} idle", p) for c, p in _series(_flat(rows), "cni_cpu_pct")),
         *((f"{c} loaded", p) for c, p in _series(_flat(rows), "cni_cpu_pct_load"))],
        x_label="nodes", y_label="% of one core", chart_id="scale-cni-cpu",
        note="mean over nodes; loaded: the pod-to-pod ring (vegeta in every node)")
    return {"up.svg": up, "convergence.svg": conv, "up-over-floor.svg": ratio,
            "up-cpu-per-pod.svg": cpu, "cni-cpu.svg": daemon}


def _mean(per: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(p[key]) for p in per if p.get(key) is not None]
    return round(sum(vals) / len(vals), 2) if vals else None


def _flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its per-node means (idle, and `_load` under the ring) and the load's
    achieved rate as top-level keys."""
    out = []
    for r in rows:
        loaded = r.get("loaded") or {}
        idle_per, load_per = r.get("per_node") or [], loaded.get("per_node") or []
        out.append({**r, "cni_mem_mib": _mean(idle_per, "cni_mem_mib"),
                    "cni_cpu_pct": _mean(idle_per, "cni_cpu_pct"),
                    "cni_mem_mib_load": _mean(load_per, "cni_mem_mib"),
                    "cni_cpu_pct_load": _mean(load_per, "cni_cpu_pct"),
                    "load_rps": (loaded.get("load") or {}).get("achieved_rps"),
                    "cni_cpu_s_per_1000_req": loaded.get("cni_cpu_s_per_1000_requests")})
    return out


COLUMNS = ("cni", "nodes", "pods", "up_s", "floor_up_s", "up_over_floor", "up_cpu_s",
           "control_plane_s",
           "check_passed_s", "bgp", "mem_per_node_mib", "cni_mem_mib", "cni_cpu_pct",
           "load_rps", "cni_mem_mib_load", "cni_cpu_pct_load", "down_s", "down_over_floor")


def _cells(r: dict[str, Any]) -> list[str]:
    cp = r.get("control_plane") or {}
    extra = {"bgp": (f"{cp.get('bgp_established')}/{cp.get('bgp_expected')}"
                     if cp.get("bgp_expected") else "-")}
    r = _flat([r])[0]
    out = []
    for col in COLUMNS:
        v = extra[col] if col in extra else r.get(col)
        out.append("-" if v is None else str(v))
    if r.get("error"):
        out.append(f"ERROR: {str(r['error']).splitlines()[0][:80]}")
    return out


def table(rows: list[dict[str, Any]], header: bool = True) -> str:
    """A fixed-width table, one row per cluster."""
    lines = [" ".join(f"{c:>16}" for c in COLUMNS)] if header else []
    lines += [" ".join(f"{c:>16}" for c in _cells(r)) for r in rows]
    return "\n".join(lines)
