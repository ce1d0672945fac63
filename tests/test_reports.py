"""Reports: offline HTML with its SVG plots, Markdown and JSON agree, compare ratios (no Docker)."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_results import PATHS, synthetic_summary

from testbed.reports import render_compare, render_many, render_run
from testbed.reports.svg import bar_chart, line_chart
from testbed.results import RunDir, Store

BOUND_TEXT = "generator-bound: the load generator saturated; this is not a CNI limit"
RUN_CHARTS = {
    "latency": {"p50", "p90", "p95", "p99", "max"},
    "rps": set(PATHS),
    "throughput": {"TCP 1 stream", "TCP 4 streams", "UDP"},
    "cpu": {"idle", "load"},
    "memory": {"idle", "load"},
}


class Page(HTMLParser):
    """Every tag and attribute of an HTML page, and the text of its <svg> elements."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.svgs = [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", text, re.S)]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def charts(page: Page) -> dict[str, dict[str, Any]]:
    """data-chart id -> kind, legend names, plotted series names, all text."""
    out = {}
    for svg in page.svgs:
        legend = {g.get("data-series") for g in svg.iter("g") if g.get("class") == "legend-item"}
        plotted = {g.get("data-series") for g in svg.iter("g") if g.get("class") == "series"}
        out[str(svg.get("data-chart"))] = {"kind": svg.get("data-kind"), "legend": legend,
                                           "series": plotted,
                                           "text": " ".join(svg.itertext())}
    return out


def assert_offline(text: str, page: Page) -> None:
    """No external fetch of any kind: no URL scheme, no scripts, no stylesheets, no src; the
    only url() are references inside the page (a chart's clip paths)."""
    assert not re.search(r"https?://", text)
    assert "@import" not in text and not re.search(r"url\((?!#)", text)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed"), tag
        assert "src" not in attrs, (tag, attrs)
        href = attrs.get("href")
        if href is not None:
            assert ":" not in href and not href.startswith("/"), href  # relative, in the run dir


def built_from(summary: dict[str, Any]) -> list[str]:
    """Every Go build of a source run as the build sentence names it: module@version, then
    release, checksum and Go version (the provenance the image builder recorded)."""
    return [f"{b['module']}@{b['version']} (release {b['release']}, {b['sum']}, {b['go']}"
            for builds in summary["environment"]["sources"].values()
            for b in builds.values() if isinstance(b, dict)]  # not the adaptations label


def md_table(md: str, title: str) -> list[list[str]]:
    """The cells of the Markdown table under `**title**`."""
    lines = md.split(f"**{title}**\n\n", 1)[1].splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return [rows[0], *rows[2:]]


def json_table(doc: dict[str, Any], table_id: str) -> dict[str, Any]:
    return next(t for s in doc["sections"] for t in s["tables"] if t["id"] == table_id)


@pytest.fixture
def run_report(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """A finalized run (in a run dir, with a Locust report dropped in) and its rendered report."""
    run = RunDir.create(tmp_path, "flannel", "vxlan", run_id=synthetic_summary()["run_id"])
    (run.path / "locust_report.html").write_text("<html><body>locust</body></html>")
    final = run.finalize(synthetic_summary())
    return final, render_run(final, run.path)


def test_run_html_is_offline_and_holds_every_plot(run_report: tuple[dict[str, Any],
                                                                    dict[str, Path]]) -> None:
    summary, files = run_report
    text = files["html"].read_text()
    page = Page(text)
    assert_offline(text, page)
    found = charts(page)
    assert set(found) == set(RUN_CHARTS)
    for cid, series in RUN_CHARTS.items():
        assert found[cid]["legend"] == series, cid
        assert found[cid]["series"] == series, cid
    assert found["rps"]["kind"] == "line" and found["latency"]["kind"] == "bar"
    # the ceilings stand beside the paths, and the generator-bound path is flagged on the plot
    assert "node-to-node (ceiling)" in found["latency"]["text"]
    assert "outside-to-ingress ⚠" in found["latency"]["text"]
    assert BOUND_TEXT in found["latency"]["text"]
    assert f"{BOUND_TEXT} (outside-to-ingress)" in text
    assert '<p class="build source">' in text
    release = summary["release"]
    assert f"flannel vxlan {release} ran the SOURCE build: the upstream code built here from " \
        f"github.com/flannel-io/flannel@{release} (release {release}, h1:" in text
    assert "; github.com/containernetworking/plugins@v" in text  # the flannel CNI plugin
    for build in built_from(summary):
        assert build in text
    assert "UPSTREAM" not in text and "BIRD" not in text, "Debian's BIRD is Calico's only"
    assert 'href="locust_report.html"' in text and 'href="summary.json"' in text
    assert "INTERRUPTED" not in text


def test_upstream_and_interrupted_are_said_plainly(tmp_path: Path) -> None:
    summary = synthetic_summary("calico", "bgp", "upstream", bound=())
    summary["interrupted"] = True
    files = render_run(summary, tmp_path)
    text, md = files["html"].read_text(), files["markdown"].read_text()
    digests = summary["environment"]["image_digests"]
    for doc in (text, md):
        assert "INTERRUPTED" in doc
        assert f"calico bgp {summary['release']} ran the UPSTREAM build, the published " \
            f"images: node: quay.io/calico/node:{summary['release']} ({digests['node']}); " \
            f"cni: quay.io/calico/cni:{summary['release']} ({digests['cni']})." in doc
        assert "SOURCE" not in doc and BOUND_TEXT not in doc
    assert "(INTERRUPTED)</h1>" in text and md.startswith("# ") and "(INTERRUPTED)" in md


def test_markdown_and_json_hold_the_same_numbers(run_report: tuple[dict[str, Any],
                                                                   dict[str, Path]]) -> None:
    summary, files = run_report
    md = files["markdown"].read_text()
    doc = json.loads(files["json"].read_text())
    for table_id, title, section in (("paths", "Paths (Locust stats over the load phase)",
                                      "paths"),
                                     ("throughput-rows", "Throughput", "throughput"),
                                     ("resources-rows", "Resources (cgroup stats)",
                                      "resources")):
        jt = json_table(doc, table_id)
        header, *rows = md_table(md, title)
        assert header == jt["columns"]
        assert len(rows) == len(jt["rows"]) == len(summary[section])
        for md_row, json_row, src in zip(rows, jt["rows"], summary[section], strict=True):
            for col, md_cell, json_cell in zip(header, md_row, json_row, strict=True):
                if isinstance(json_cell, bool):
                    assert md_cell == ("yes" if json_cell else "no")
                elif isinstance(json_cell, int | float):
                    assert float(md_cell) == json_cell
                    assert json_cell == pytest.approx(src[col], abs=5e-4)  # the measured value
                else:
                    assert md_cell == str(json_cell)
    # every per-path figure of the summary is in both renderings
    for path in summary["paths"]:
        assert f"| {path['path']} | {path['requests']} | {path['failures']} |" in md


def test_compare_ratios(tmp_path: Path) -> None:
    flannel = synthetic_summary("flannel", "vxlan", "source", seed=1)
    calico = synthetic_summary("calico", "bgp", "upstream", seed=2, slowdown=1.4, bound=())
    files = render_compare([flannel, calico], tmp_path)
    data = json.loads(files["json"].read_text())["data"]
    cols = [f"flannel vxlan {flannel['release']} [source]",
            f"calico bgp {calico['release']} [upstream]"]
    assert [c["label"] for c in data["columns"]] == cols
    metrics = {(m["path"], m["metric"]): m for m in data["metrics"]}

    def cell(path: str, metric: str, col: int) -> dict[str, Any]:
        return dict(metrics[(path, metric)]["cells"][col])

    def row(s: dict[str, Any], path: str) -> dict[str, Any]:
        return next(p for p in s["paths"] if p["path"] == path)

    for path in PATHS:
        p95 = [row(s, path)["p95_ms"] for s in (flannel, calico)]
        rps = [row(s, path)["rps"] for s in (flannel, calico)]
        for i, s in enumerate((flannel, calico)):
            http = [b for b in s["baselines"] if b["kind"] == "http"]
            fastest = min(b["p95_ms"] for b in http)  # lower is better
            busiest = max(b["rps"] for b in http)  # higher is better
            assert cell(path, "p95_ms", i)["vs_ceiling"] == pytest.approx(p95[i] / fastest)
            assert cell(path, "p95_ms", i)["vs_best"] == pytest.approx(p95[i] / min(p95))
            assert cell(path, "rps", i)["vs_ceiling"] == pytest.approx(rps[i] / busiest)
            assert cell(path, "rps", i)["vs_best"] == pytest.approx(rps[i] / max(rps))
    # flannel is faster in this data: it is the best latency column, calico the best of nothing
    assert cell("pod-to-service", "p95_ms", 0)["vs_best"] == 1.0
    assert cell("pod-to-service", "p95_ms", 1)["vs_best"] > 1.0
    assert cell("pod-to-service", "rps", 1)["vs_best"] < 1.0

    gbit = [next(t["gbit_s"] for t in s["throughput"] if t["path"] == "pod-to-pod-cross-node"
                 and t["protocol"] == "tcp" and t["streams"] == 1) for s in (flannel, calico)]
    for i, s in enumerate((flannel, calico)):
        ceiling = next(b["gbit_s"] for b in s["baselines"] if b["kind"] == "throughput")
        c = cell("pod-to-pod-cross-node", "gbit_s tcp x1", i)
        assert c["vs_ceiling"] == pytest.approx(gbit[i] / ceiling)
        assert c["vs_best"] == pytest.approx(gbit[i] / max(gbit))
        assert c["ceiling_path"] == "node-to-node tcp x1"

    text = files["html"].read_text()
    page = Page(text)
    assert_offline(text, page)
    assert {"compare-p95", "compare-rps"} <= set(charts(page))
    for chart in charts(page).values():
        assert chart["legend"] == set(cols)
    assert "SOURCE build" in text and "UPSTREAM build" in text
    for col in cols:
        assert f"<th>{col} ×ceiling</th>" in text and f"<th>{col} ×best</th>" in text
    md = files["markdown"].read_text()
    header, *rows = md_table(md, "pod-to-service")
    p95_row = next(r for r in rows if r[0] == "p95 latency (ms)")
    at = header.index(f"{cols[1]} ×best")
    assert float(p95_row[at]) == pytest.approx(cell("pod-to-service", "p95_ms", 1)["vs_best"],
                                               abs=5e-4)


def test_render_many_from_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "results.sqlite")
    for i, cni in enumerate(("flannel", "calico", "weave")):
        store.add(synthetic_summary(cni, "" if cni == "weave" else "vxlan", seed=i, duration=4))
    runs = store.last(3)
    files = render_many(runs, tmp_path / "out")
    text = files["html"].read_text()
    page = Page(text)
    assert_offline(text, page)
    found = charts(page)
    assert len(page.svgs) == len(found) == 3 * len(RUN_CHARTS)  # ids stay unique per run
    for n in (1, 2, 3):
        assert {f"r{n}-{c}" for c in RUN_CHARTS} <= set(found)
    index = json_table(json.loads(files["json"].read_text()), "runs-index")
    assert [r[0] for r in index["rows"]] == [s["run_id"] for s in runs]
    assert [r[3] for r in index["rows"]] == ["source"] * 3
    for s in runs:
        for build in built_from(s):
            assert build in text, build
    # Calico's release is a pseudo-version of its module: the sentence names its commit.
    calico = next(s for s in runs if s["cni"] == "calico")
    (go,) = {b["version"]: b for role in calico["environment"]["sources"].values()
             for b in role.values() if isinstance(b, dict)}.values()
    commit = go["version"].rsplit("-", 1)[1]
    assert go["version"].startswith("v0.0.0-") and go["vcs_revision"] == commit
    assert f"github.com/projectcalico/calico@{go['version']} (release " \
        f"{calico['release']}, {go['sum']}, {go['go']}, commit {commit})" in text
    assert text.count("github.com/projectcalico/calico@") == 1, "one module, two images"
    assert "BIRD is Debian's bird 1.6.8-10, standing in for Calico's BIRD fork." in \
        html.unescape(text)
    assert text.count("BIRD is Debian") == 1, "only the calico run"
    (adapted,) = [b["adaptations"] for b in calico["environment"]["sources"].values()
                  if "adaptations" in b]
    assert adapted.startswith("bird: ")
    assert html.unescape(text).count(f" Adapted: {adapted}.") == 1
    assert "github.com/weaveworks/weave@v2.6.5+incompatible (release v2.6.5, " in text


def texts(svg: ET.Element, cls: str) -> list[str]:
    """The text drawn inside the elements of one class (e.g. the x tick labels)."""
    return [" ".join(t.strip() for t in g.itertext() if t.strip())
            for g in svg.iter() if g.get("class") == cls]


def test_svg_charts_say_what_they_plot() -> None:
    def draw() -> str:
        return bar_chart("Latency", ["a", "b"], [("p50", [1.0, None]), ("p95", [2.0, 3.0])],
                         y_label="response time (ms)", x_label="path", chart_id="lat",
                         flagged=["b"], note="⚠ bound")

    text = draw()
    assert text == draw()  # same data, same bytes
    bars = ET.fromstring(text)
    assert bars.get("data-chart") == "lat" and bars.get("data-kind") == "bar"
    assert bars.findtext("title") == "Latency"
    drawn = [g.get("data-series") for g in bars.iter("g") if g.get("class") == "series"]
    assert sorted(drawn) == ["p50", "p95", "p95"]  # the missing p50 of b is not drawn
    assert texts(bars, "legend-item") == ["p50", "p95"]
    assert texts(bars, "x-tick") == ["a", "b ⚠"]
    words = " ".join(bars.itertext())
    assert "response time (ms)" in words and "path" in words and "⚠ bound" in words
    ids = [e.get("id") for e in bars.iter() if e.get("id")]
    assert len(ids) == len(set(ids)) and all(i.startswith("lat-") for i in ids)

    empty = ET.fromstring(bar_chart("Nothing", [], [], y_label="ms", chart_id="x"))
    assert "no data recorded" in " ".join(empty.itertext())
    odd = ET.fromstring(line_chart("a<b & c $x$", [("p<&>\"q", [(1.0, 2.0), (0.0, 1.0)])],
                                   x_label="s", y_label="rps", chart_id="y"))
    assert odd.findtext("title") == "a<b & c $x$"
    assert "a<b & c $x$" in " ".join(odd.itertext())  # a dollar sign, not mathtext
    assert {g.get("data-series") for g in odd.iter("g") if g.get("class") == "series"} == {
        'p<&>"q'}


def test_load_runner_shapes_are_understood(tmp_path: Path) -> None:
    """The runner's own variants: kind "locust" ceilings, per-path generator, epoch timestamps."""
    s = synthetic_summary(bound=("pod-to-service",))
    t0 = 1_764_151_200  # Locust's history CSV stamps rows with Unix time
    s["timeseries"] = [{**r, "t": r["t"] + t0 + 60 * PATHS.index(r["path"])}
                       for r in s["timeseries"]]
    s["baselines"] = [{**b, "kind": "locust"} if b["kind"] == "http" else b
                      for b in s["baselines"]]
    s["generator"] = {p: {"cpu_max": 97.0 if p == "pod-to-service" else 41.0, "cpu_mean": 60.0,
                          "bound": p == "pod-to-service", "workers": 2} for p in PATHS}
    s["resources"] = [{**r, "phase": "load:pod-to-service"} if r["phase"] == "load" else r
                      for r in s["resources"]]
    s.update(status="failed", error="path pod-to-nodeport is broken at hop a -> b: timeout")
    run = RunDir.create(tmp_path, "flannel", "vxlan", run_id=s["run_id"])
    final = run.finalize(s)
    assert final["status"] == "failed" and final["baselines"][0]["kind"] == "locust"
    assert final["report"] == str(run.path / "report.html")
    files = render_run(final, run.path)
    assert files["html"] == run.path / "report.html"
    text = files["html"].read_text()
    found = charts(Page(text))
    assert found["cpu"]["legend"] == {"idle", "load:pod-to-service"}
    assert "node-to-node (ceiling)" in found["latency"]["text"]
    rps = next(svg for svg in Page(text).svgs if svg.get("data-chart") == "rps")
    ticks = [float(t) for t in texts(rps, "x-tick")]
    assert ticks[0] == 0 and ticks[-1] < 100  # offsets from each path's start, not epoch
    assert "FAILED: path pod-to-nodeport is broken" in text
    gen = json_table(json.loads(files["json"].read_text()), "generator")
    assert gen["columns"] == ["path", "cpu_max", "cpu_mean", "bound", "workers"]
    assert [r[0] for r in gen["rows"]] == list(PATHS)
    data = json.loads(render_compare([final, synthetic_summary("calico", "bgp")],
                                     tmp_path / "cmp")["json"].read_text())["data"]
    p95 = next(m for m in data["metrics"] if m["metric"] == "p95_ms")
    ceiling = min(b["p95_ms"] for b in s["baselines"] if b.get("kind") == "locust")
    assert p95["cells"][0]["ceiling"] == ceiling


def _fault_doc(trial: int, share: float, back: float, kinds: dict[str, int]) -> dict[str, Any]:
    return {"fault": "partition 3:1,2", "kind": "partition", "at_s": 15.0, "trial": trial,
            "applied": 1000.0 + trial, "end": 1010.0 + trial, "failed_share": share,
            "first_success_after_s": back, "control_plane_s": 2 * back,
            "error_kinds": kinds}


def test_compare_puts_each_fault_side_by_side(tmp_path: Path) -> None:
    flannel = synthetic_summary("flannel", "vxlan", "source", seed=1)
    calico = synthetic_summary("calico", "bgp", "upstream", seed=2)
    flannel["faults"] = {"nodeport": [_fault_doc(1, 0.01, 1.0, {"timeout": 5}),
                                      _fault_doc(2, 0.03, 3.0, {"timeout": 7}),
                                      _fault_doc(3, 0.02, 2.0, {"connection_refused": 1})]}
    calico["faults"] = {"nodeport": [_fault_doc(1, 0.2, 9.0, {})]}
    files = render_compare([flannel, calico], tmp_path)
    doc = json.loads(files["json"].read_text())
    [table] = [t for s in doc["sections"] if s["id"] == "faults-side-by-side"
               for t in s["tables"]]
    [row] = table["rows"]
    cell = dict(zip(table["columns"], row, strict=True))
    f, c = (h.removesuffix(" failed_share") for h in table["columns"] if
            h.endswith("failed_share"))
    assert "flannel" in f and "calico" in c
    assert row[:2] == ["nodeport", "partition@15s"]
    assert cell[f"{f} failed_share"] == 0.02 and cell[f"{f} first_success_after_s"] == 2.0
    assert cell[f"{f} control_plane_s"] == 4.0
    assert cell[f"{f} error_kinds"] == "timeout 12, connection_refused 1"
    assert cell[f"{c} failed_share"] == 0.2 and cell[f"{c} error_kinds"] == "none"
    assert "Faults side by side" in files["html"].read_text()
    del flannel["faults"], calico["faults"]
    plain = json.loads(render_compare([flannel, calico], tmp_path / "b")["json"].read_text())
    assert "faults-side-by-side" not in [s["id"] for s in plain["sections"]]
