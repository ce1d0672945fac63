"""The doctor's checklist on stdout, from the report `doctor.run()` returns."""

from __future__ import annotations

from typing import Any

from testbed import console
from testbed.doctor.report import GIB, REQUIRED

OK, BAD, WARN, UNKNOWN = "[green]✓[/]", "[red]✗[/]", "[yellow]![/]", "[yellow]?[/]"


def render(report: dict[str, Any]) -> None:
    """A short checklist on stdout."""
    p = console.out.print
    d = report["docker"]
    if not d.get("reachable"):
        return  # the CLI's one-line error says it all
    p(f" {OK} Docker {d['engine_version']} (API {d['api_version']}), {d['os']}, kernel "
      f"{d['kernel']}, {d['storage_driver']}, cgroup v{d['cgroup_version']}"
      f"{', rootless' if d['rootless'] else ''}")
    priv = report["privileged"]
    if priv["allowed"] is False:
        p(f" {WARN} --privileged is refused ({priv['cause']}): fine, the testbed never "
          "uses it")
    else:
        p(f" {OK if priv['allowed'] else WARN} --privileged: {priv['reason']}")
    caps = report["node_capabilities"]
    mark = OK if caps["ok"] else (BAD if caps["ok"] is False else WARN)
    p(f" {mark} node containers {caps['reason']}" if caps["ok"]
      else f" {mark} node containers: {caps['reason']}")
    meta = report["kernel_probe"]
    p(f" {OK if meta['method'] not in ('none', '') else WARN} kernel features, probed "
      f"{meta['where']}" + (f" [dim]({meta['error']})[/]" if meta.get("error") else ""))
    blocking = set(REQUIRED)
    for name, f in report["kernel"].items():
        if f["present"]:
            p(f"    {OK} {name:16} [dim]{f['detail']}[/]")
        elif f["present"] is None:
            p(f"    {UNKNOWN} {name:16} could not tell: [dim]{f['detail']}[/]")
        else:
            mark = BAD if name in blocking else WARN
            why = "; ".join(f["rules_out"]) or "not needed by any CNI mode here"
            p(f"    {mark} {name:16} absent: rules out {why}" if f["rules_out"]
              else f"    {mark} {name:16} absent: {why}")
    disk = report["disk"]
    mark = OK if disk["ok"] else BAD
    p(f" {mark} disk: {disk['free_bytes'] / GIB:.1f} GiB free on {disk['path']} "
      f"({disk['what']})" + ("" if disk["ok"] else f": {disk['reason']}"))
    _render_images(report)
    tools = report["tools"]
    have = ", ".join(t for t in ("mmdebstrap", "debootstrap") if tools.get(t)) or "none"
    if tools["ok"]:
        need = "needed now: the base image is missing" if tools["needed"] else \
            "only needed to rebuild the base image"
        p(f" {OK if have != 'none' or not tools['needed'] else WARN} rootfs tools: {have} "
          f"[dim]({need})[/]")
    else:
        p(f" {BAD} rootfs tools: {tools['reason']}")
    for note in report["notes"]:
        p(f" {WARN} {note}")
    if report["ok"]:
        p(" [green]Ready.[/] Next: `python -m testbed up`")
    for line in report["problems"][1:]:  # the first one is the CLI's closing error line
        p(f" {BAD} {line}")


def _render_images(report: dict[str, Any]) -> None:
    rows = report.get("images") or []
    ref = [r for r in rows if r["kind"] != "upstream"]
    upstream = [r for r in rows if r["kind"] == "upstream"]
    have = [r["name"] for r in ref if r["present"]]
    missing = [r["name"] for r in ref if not r["present"]]
    mark = OK if not missing else WARN
    text = f"{len(have)}/{len(ref)} local builds present"
    if missing:
        text += f"; `up` builds what it needs of: {', '.join(missing)}"
    up = sum(1 for r in upstream if r["present"])
    text += f"; upstream: {up}/{len(upstream)}"
    if upstream and not up:
        text += " (source builds are used)"
    console.out.print(f" {mark} images: {text}")
