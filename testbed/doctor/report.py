"""`python -m testbed doctor`: can this machine run testbed clusters, and with which CNI modes?

Checks, in order: the Docker engine, whether `--privileged` works (informational: the testbed
never uses it), whether a container with exactly the node containers' capabilities starts,
which kernel features exist (probed from inside that container by `testbed_node.kernel`),
free disk, images, and the tools a base-image build needs. `run()` never raises for a
missing prerequisite: it reports it, so `--json` always prints; `ok` is false and
`blocking` is one actionable line when something must be fixed first.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from typing import Any

from testbed.constants import LABEL_CLUSTER, NODE_CAPS
from testbed.doctor import probes
from testbed.errors import UserError
from testbed.paths import cache_dir
from testbed.provider.base import Provider

GIB = 1024**3
MIN_FREE = 5 * GIB
REQUIRED = ("veth", "bridge")  # plus at least one iptables backend


def run() -> dict[str, Any]:
    """Probe everything and return the report (see the module docstring)."""
    report: dict[str, Any] = {"ok": True, "blocking": "", "problems": [], "notes": []}
    try:
        from testbed.provider.docker import DockerProvider

        provider: Provider = DockerProvider()
    except UserError as e:
        _problem(report, str(e))
        untested = "not tested: the Docker engine is unreachable"
        report["docker"] = {"reachable": False, "error": str(e)}
        report["privileged"] = {"allowed": None, "error": "", "reason": untested}
        report["node_capabilities"] = {"ok": None, "reason": untested}
        report["kernel_probe"], report["kernel"] = probes.kernel(None, None, None, local=True)
        report["disk"] = _disk({})
        report["images"] = []
        report["tools"] = _tools(None, base_present=False)
        return report
    report["docker"] = provider.engine()
    local = bool(report["docker"]["local"])
    images = _images(report, provider)
    probe_image, probe_name = _probe_image(images)
    stale = probes.remove_stale(provider)
    if stale:
        report["notes"].append(f"removed {stale} probe container(s) left by an earlier, killed "
                               "doctor run")
    cluster = f"doctor-{secrets.token_hex(4)}"
    report["probe_label"] = f"{LABEL_CLUSTER}={cluster}"
    try:
        report["privileged"] = probes.privileged(provider, cluster, probe_image)
        caps, container = probes.node_container(provider, cluster, probe_image, local)
        report["node_capabilities"] = caps
        if caps["ok"] is False:
            _problem(report, f"this engine will not start a node container ({caps['reason']}):"
                             f" it must allow the capabilities {', '.join(NODE_CAPS)}, "
                             "unconfined seccomp/apparmor and the node sysctls")
        report["kernel_probe"], report["kernel"] = probes.kernel(provider, container, probe_name,
                                                                local)
    finally:
        probes.cleanup(provider, cluster)
    _kernel_blocking(report)
    report["disk"] = _disk(report["docker"])
    if report["disk"]["ok"] is False:
        _problem(report, report["disk"]["reason"])
    base_present = any(r["name"] == "base" and r["present"] for r in images)
    report["tools"] = _tools(provider, base_present)
    if not report["tools"]["ok"]:
        _problem(report, report["tools"]["reason"])
    if probe_name is None:
        report["notes"].append("testbed images are not built yet: `python -m testbed images "
                               "build` builds them (about two minutes), or `up` does it")
    return report


def _problem(report: dict[str, Any], line: str) -> None:
    report["problems"].append(line)
    if report["ok"]:
        report["ok"], report["blocking"] = False, line


# --- Docker --------------------------------------------------------------------------------

def _disk(docker_info: dict[str, Any]) -> dict[str, Any]:
    root = docker_info.get("root_dir") or ""
    path, what = root, "Docker's root dir"
    usage = None
    if docker_info.get("local") and root:
        with contextlib.suppress(OSError):
            usage = shutil.disk_usage(root)
    if usage is None:
        where = "unknown" if not root else "not on this host"
        path, what = str(cache_dir()), f"the testbed cache; Docker's root dir is {where}"
        usage = shutil.disk_usage(path)
    free = int(usage.free)
    doc: dict[str, Any] = {"path": path, "what": what, "free_bytes": free,
                           "needed_bytes": MIN_FREE, "ok": free >= MIN_FREE, "reason": ""}
    if free < MIN_FREE:
        doc["reason"] = (f"only {free / GIB:.1f} GiB free on {path} ({what}): the testbed needs "
                         f"at least {MIN_FREE // GIB} GiB for images and clusters; free "
                         f"{(MIN_FREE - free) / GIB:.1f} GiB more (e.g. `docker system prune`)")
    return doc


# --- images and tools ----------------------------------------------------------------------

def _images(report: dict[str, Any], provider: Provider) -> list[dict[str, Any]]:
    from testbed.cni.inventory import inventory

    try:
        rows = inventory(provider.images)
    except Exception as e:  # an inventory problem must not hide the other checks
        report["notes"].append(f"could not list images: {e}")
        rows = []
    report["images"] = rows
    return rows


def _probe_image(rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The node image if present, else the base image, else nothing."""
    for name in ("node", "base"):
        row = next((r for r in rows if r["name"] == name), None)
        if row and row["present"]:
            return str(row["ref"]), name
    return None, None


def _tools(provider: Provider | None, base_present: bool) -> dict[str, Any]:
    from testbed.images.build import LOCAL_DEBIAN_BASES

    mmdebstrap, debootstrap = shutil.which("mmdebstrap"), shutil.which("debootstrap")
    local = None
    if provider is not None and not base_present:
        local = next((t for t in LOCAL_DEBIAN_BASES if provider.images.exists(t)), None)
    go = shutil.which("go")
    doc: dict[str, Any] = {"mmdebstrap": mmdebstrap, "debootstrap": debootstrap,
                           "local_debian_image": local, "go": go,
                           "needed": None if provider is None else not base_present,
                           "ok": True, "reason": ""}
    # `images build` makes the base from a local Debian image or with mmdebstrap.
    if provider is not None and not base_present and not (mmdebstrap or local):
        doc["ok"] = False
        also = " (debootstrap alone is not used)" if debootstrap else ""
        doc["reason"] = ("the base image is not built and there is no mmdebstrap to build it"
                         f"{also}: install mmdebstrap: apt-get install mmdebstrap")
    if go is None:
        doc["ok"] = False
        doc["reason"] = ("no `go` on PATH: the CNIs are built from their upstream Go modules; "
                         "install Go 1.22 or newer")
    return doc


def _kernel_blocking(report: dict[str, Any]) -> None:
    k = report["kernel"]
    for f in REQUIRED:
        if k[f]["present"] is False:
            _problem(report, f"the kernel lacks {f} ({k[f]['detail']}): every CNI needs it; "
                             "use a host kernel with it enabled")
    if k["iptables_legacy"]["present"] is False and k["iptables_nft"]["present"] is False:
        _problem(report, "neither iptables-legacy nor iptables-nft works "
                         f"({k['iptables_legacy']['detail']}): service rules and NAT need one; "
                         "enable ip_tables or nf_tables in the host kernel")
