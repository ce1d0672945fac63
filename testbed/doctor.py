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
import importlib.util
import io
import json
import os
import posixpath
import secrets
import shutil
import socket
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from testbed import console
from testbed.constants import LABEL_CLUSTER, LABEL_ROLE, NODE_CAPS, NODE_SECURITY_OPT, NODE_SYSCTLS
from testbed.errors import UserError
from testbed.paths import NODE_PACKAGES, REPO_ROOT, cache_dir
from testbed.provider.docker import create_container
from testbed_contract.node import AGENT_ROOT, KERNEL_MODULE
from testbed_node import kernel as kprobe

GIB = 1024**3
MIN_FREE = 5 * GIB
ROLE = "doctor"
TUN = "/dev/net/tun"
PROBE_TIMEOUT = 60
STALE_AFTER = 600  # a doctor run takes seconds; older probe containers are leftovers

# What the absence of each kernel feature rules out in this testbed.
RULES_OUT: dict[str, list[str]] = {
    "veth": ["every CNI (pods attach to their node through veth pairs)"],
    "bridge": ["flannel and weave pod networking (bridge)", "Docker bridge networks"],
    "vxlan": ["flannel vxlan", "calico vxlan"],
    "ipip": ["calico IPIP pools"],
    "gre": [],
    "dummy": ["weave (weaver sets its bridge MTU through a temporary dummy link)"],
    "wireguard": ["flannel wireguard backend", "calico wireguard encryption"],
    "tun": ["flannel udp backend", "weave sleeve"],
    "openvswitch": ["weave fastdp (weave falls back to sleeve)"],
    "ipvs": ["kube-proxy ipvs mode (testbed uses iptables mode)"],
    "netem": ["link delay/loss impairment (rate shaping via tbf/htb remains)"],
    "tbf": ["link rate shaping with tbf"],
    "htb": ["link rate shaping with htb"],
    "br_netfilter": ["flannel (flanneld exits without it unless EnableNFTables)"],
    "iptables_legacy": ["the iptables-legacy backend (iptables-nft remains)"],
    "iptables_nft": ["the iptables-nft backend (iptables-legacy remains)"],
    "ipset": ["calico"],
    "conntrack": ["service NAT: pod-to-service, NodePort and egress paths"],
}
REQUIRED = ("veth", "bridge")  # plus at least one iptables backend


def run() -> dict[str, Any]:
    """Probe everything and return the report (see the module docstring)."""
    report: dict[str, Any] = {"ok": True, "blocking": "", "problems": [], "notes": []}
    try:
        from testbed.provider.docker import connect

        client = connect()
    except UserError as e:
        _problem(report, str(e))
        untested = "not tested: the Docker engine is unreachable"
        report["docker"] = {"reachable": False, "error": str(e)}
        report["privileged"] = {"allowed": None, "error": "", "reason": untested}
        report["node_capabilities"] = {"ok": None, "reason": untested}
        report["kernel_probe"], report["kernel"] = _kernel(None, None, None, local=True)
        report["disk"] = _disk({})
        report["images"] = []
        report["tools"] = _tools(None, base_present=False)
        return report
    report["docker"] = _docker(client)
    local = bool(report["docker"]["local"])
    images = _images(report)
    probe_image, probe_name = _probe_image(client, images)
    stale = _remove_stale(client)
    if stale:
        report["notes"].append(f"removed {stale} probe container(s) left by an earlier, killed "
                               "doctor run")
    cluster = f"doctor-{secrets.token_hex(4)}"
    report["probe_label"] = f"{LABEL_CLUSTER}={cluster}"
    try:
        report["privileged"] = _privileged(client, cluster, probe_image)
        caps, container = _node_container(client, cluster, probe_image, local)
        report["node_capabilities"] = caps
        if caps["ok"] is False:
            _problem(report, f"this engine will not start a node container ({caps['reason']}):"
                             f" it must allow the capabilities {', '.join(NODE_CAPS)}, "
                             "unconfined seccomp/apparmor and the node sysctls")
        report["kernel_probe"], report["kernel"] = _kernel(client, container, probe_name, local)
    finally:
        _cleanup(client, cluster)
    _kernel_blocking(report)
    report["disk"] = _disk(report["docker"])
    if report["disk"]["ok"] is False:
        _problem(report, report["disk"]["reason"])
    base_present = any(r["name"] == "base" and r["present"] for r in images)
    report["tools"] = _tools(client, base_present)
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

def _docker(client: docker.DockerClient) -> dict[str, Any]:
    version = client.version()
    info = client.info()
    kernel = info.get("KernelVersion") or version.get("KernelVersion", "")
    local = kernel == os.uname().release and info.get("Name") == socket.gethostname()
    security = info.get("SecurityOptions") or []
    return {
        "reachable": True,
        "engine_version": version.get("Version", ""),
        "api_version": version.get("ApiVersion", ""),
        "os": info.get("OperatingSystem", ""),
        "kernel": kernel,
        "arch": info.get("Architecture", ""),
        "storage_driver": info.get("Driver", ""),
        "cgroup_version": str(info.get("CgroupVersion", "")),
        "cgroup_driver": info.get("CgroupDriver", ""),
        "root_dir": info.get("DockerRootDir", ""),
        "rootless": any("rootless" in s for s in security),
        "cpus": info.get("NCPU"),
        "memory_bytes": info.get("MemTotal"),
        "local": local,
    }


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

def _images(report: dict[str, Any]) -> list[dict[str, Any]]:
    from testbed.cni.inventory import inventory

    try:
        rows = inventory()
    except Exception as e:  # an inventory problem must not hide the other checks
        report["notes"].append(f"could not list images: {e}")
        rows = []
    report["images"] = rows
    return rows


def _probe_image(client: docker.DockerClient, rows: list[dict[str, Any]]
                 ) -> tuple[str | None, str | None]:
    """The node image if present, else the base image, else nothing."""
    for name in ("node", "base"):
        row = next((r for r in rows if r["name"] == name), None)
        if row and row["present"]:
            return str(row["ref"]), name
    return None, None


def _tools(client: docker.DockerClient | None, base_present: bool) -> dict[str, Any]:
    from testbed.images.build import LOCAL_DEBIAN_BASES
    from testbed.images.build import present as image_present

    mmdebstrap, debootstrap = shutil.which("mmdebstrap"), shutil.which("debootstrap")
    local = None
    if client is not None and not base_present:
        local = next((t for t in LOCAL_DEBIAN_BASES if image_present(client, t)), None)
    go = shutil.which("go")
    doc: dict[str, Any] = {"mmdebstrap": mmdebstrap, "debootstrap": debootstrap,
                           "local_debian_image": local, "go": go,
                           "needed": None if client is None else not base_present,
                           "ok": True, "reason": ""}
    # `images build` makes the base from a local Debian image or with mmdebstrap.
    if client is not None and not base_present and not (mmdebstrap or local):
        doc["ok"] = False
        also = " (debootstrap alone is not used)" if debootstrap else ""
        doc["reason"] = ("the base image is not built and there is no mmdebstrap to build it"
                         f"{also}: install mmdebstrap: apt-get install mmdebstrap")
    if go is None:
        doc["ok"] = False
        doc["reason"] = ("no `go` on PATH: the CNIs are built from their upstream Go modules; "
                         "install Go 1.22 or newer")
    return doc


# --- probe containers ----------------------------------------------------------------------

def _labels(cluster: str) -> dict[str, str]:
    return {LABEL_CLUSTER: cluster, LABEL_ROLE: ROLE}


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _text(data: object) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else ""


def _cause(e: docker.errors.APIError) -> str:
    """The innermost part of an engine error ("unable to apply caps: ...")."""
    text = _explain(e).removesuffix(": unknown")
    for marker in ("unable to start container process: ", "OCI runtime create failed: "):
        if marker in text:
            return text.split(marker, 1)[1]
    return text


def _explain(e: docker.errors.APIError) -> str:
    return _short(str(e.explanation or e))


def _privileged(client: docker.DockerClient, cluster: str, image: str | None) -> dict[str, Any]:
    if image is None:
        return {"allowed": None, "reason": "not tested: no testbed image yet. The testbed never "
                                           "needs --privileged (nodes get explicit capabilities)"}
    try:
        c = client.containers.create(image, command=["true"], privileged=True,
                                     name=f"{cluster}-privileged", labels=_labels(cluster))
        c.start()
        c.wait(timeout=PROBE_TIMEOUT)
    except docker.errors.APIError as e:
        return {"allowed": False, "error": _explain(e), "cause": _cause(e),
                "reason": f"this engine refuses --privileged ({_cause(e)}); not a problem: the "
                          "testbed never needs it and gives node containers explicit "
                          "capabilities instead"}
    return {"allowed": True, "error": "",
            "reason": "allowed, but unused: node containers get explicit capabilities instead"}


def _node_container(client: docker.DockerClient, cluster: str, image: str | None,
                    local: bool) -> tuple[dict[str, Any], Container | None]:
    """Start a container with exactly the node containers' security settings."""
    if image is None:
        return {"ok": None, "reason": "not tested: no testbed image yet"}, None
    kwargs: dict[str, Any] = {
        "command": ["sleep", "infinity"], "cap_add": NODE_CAPS,
        "security_opt": NODE_SECURITY_OPT, "sysctls": NODE_SYSCTLS, "init": True,
        "labels": _labels(cluster),
    }
    attempts = [[f"{TUN}:{TUN}:rwm"], []] if local and os.path.exists(TUN) else [[]]
    note, error = "", ""
    for i, devices in enumerate(attempts):
        try:
            c = create_container(client, image, name=f"{cluster}-node-{i}",
                                 devices=devices or None, **kwargs)
            c.start()
            c.reload()
        except docker.errors.APIError as e:
            error = _cause(e)
            if devices:
                note = f"; passing {TUN} failed ({error})"
            continue
        if c.status != "running":
            error = f"it exited at once: {_short(c.logs(tail=5).decode(errors='replace'))}"
            continue
        extra = f", {TUN}" if devices else ""
        return {"ok": True, "image": image, "tun_device": bool(devices),
                "reason": f"start (explicit capabilities, unconfined seccomp/apparmor, "
                          f"sysctls, init{extra}){note}"}, c
    return {"ok": False, "image": image, "reason": error}, None


def _agent_archive(with_pyroute2: bool) -> bytes:
    """The node packages (testbed_node, testbed_contract) plus the host's pure-Python pyroute2."""
    buf = io.BytesIO()
    root = AGENT_ROOT.strip("/")

    def keep(t: tarfile.TarInfo) -> tarfile.TarInfo | None:
        base = posixpath.basename(t.name)
        return None if base == "__pycache__" or base.endswith(".pyc") else t

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for package in NODE_PACKAGES:
            tar.add(REPO_ROOT / package, f"{root}/{package}", filter=keep)
        spec = importlib.util.find_spec("pyroute2") if with_pyroute2 else None
        if spec and spec.submodule_search_locations:
            src = Path(next(iter(spec.submodule_search_locations)))
            tar.add(src, f"{root}/site/pyroute2", filter=keep)
    return buf.getvalue()


def _probe_inside(container: Container, image_name: str | None) -> dict[str, Any]:
    """Run `python3 -m testbed_node.kernel` in the container; its JSON report."""
    env = {"PYTHONPATH": AGENT_ROOT}
    if image_name != "node":  # the base image: bring the agent and pyroute2 along
        container.put_archive("/", _agent_archive(with_pyroute2=True))
        env = {"PYTHONPATH": f"{AGENT_ROOT}:{AGENT_ROOT}/site"}
    code, (out, err) = container.exec_run(["python3", "-m", KERNEL_MODULE],
                                          environment=env, demux=True)
    lines = _text(out).strip().splitlines()
    if code != 0 or not lines:
        raise ValueError(f"the kernel probe exited {code}: "
                         f"{_text(err).strip() or _text(out).strip()}")
    doc = json.loads(lines[-1])
    if not isinstance(doc, dict):
        raise ValueError(f"the kernel probe printed {lines[-1]!r}")
    return doc


def _kernel(client: docker.DockerClient | None, container: Container | None, image_name: str | None,
            local: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Kernel features from inside the node-capabilities container, else read-only on the host."""
    meta: dict[str, Any] = {"where": "", "method": "", "image": image_name, "error": ""}
    inside: dict[str, Any] | None = None
    if container is not None:
        try:
            inside = _probe_inside(container, image_name)
        except (docker.errors.DockerException, requests.exceptions.RequestException,
                ValueError) as e:
            meta["error"] = _short(str(e))
    host = kprobe.read_only() if local else None
    features: dict[str, Any] = {}
    if inside is not None:
        meta["where"] = f"inside a node-capabilities container ({image_name} image)"
        meta["method"] = inside.get("probe", "")
        meta["netns"] = inside.get("netns")
        meta["kernel"] = inside.get("kernel", "")
    elif host is not None:
        meta["where"], meta["method"] = "on this host, read-only", "read-only"
        meta["kernel"] = host.get("kernel", "")
    else:
        meta["where"], meta["method"] = "nowhere (no image, and Docker runs elsewhere)", "none"
    for f in kprobe.FEATURES:
        got = dict((inside or {}).get("features", {}).get(f) or {})
        got.setdefault("present", None)
        got.setdefault("detail", "not probed")
        got["source"] = "container" if inside is not None else "none"
        if got["present"] is None and host is not None:
            fallback = host["features"][f]
            if fallback["present"] is not None or inside is None:
                got = {**fallback, "source": "host read-only"}
        got["rules_out"] = RULES_OUT[f] if got["present"] is False else []
        features[f] = {"present": got["present"], "detail": got["detail"],
                       "rules_out": got["rules_out"], "source": got["source"]}
    return meta, features


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


def _remove_stale(client: docker.DockerClient) -> int:
    """Probe containers older than STALE_AFTER seconds: their doctor run was killed."""
    removed = 0
    try:
        found = client.api.containers(all=True, filters={"label": f"{LABEL_ROLE}={ROLE}"})
    except docker.errors.APIError:
        return 0
    for c in found:
        if time.time() - float(c.get("Created", 0)) > STALE_AFTER:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
                removed += 1
    return removed


def _cleanup(client: docker.DockerClient, cluster: str) -> None:
    """Remove every probe container of this run, found by label (even after Ctrl-C)."""
    interrupted = False
    for _ in range(3):
        try:
            found = client.containers.list(
                all=True, filters={"label": f"{LABEL_CLUSTER}={cluster}"})
            for c in found:
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
            break
        except KeyboardInterrupt:
            interrupted = True
        except docker.errors.APIError:
            continue
    if interrupted:
        raise KeyboardInterrupt


# --- rendering -----------------------------------------------------------------------------

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
