"""The doctor's probe containers: --privileged, a node-capabilities container, and the kernel
probe run inside it; all through the provider, all labelled, all removed afterwards."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import posixpath
import tarfile
import time
from pathlib import Path
from typing import Any

from testbed.constants import LABEL_CLUSTER, NODE_CAPS, NODE_SECURITY_OPT, NODE_SYSCTLS
from testbed.errors import ProviderError
from testbed.lifecycle.wait import TIMEOUTS
from testbed.paths import NODE_PACKAGES, REPO_ROOT
from testbed.provider.base import ContainerSpec, Provider
from testbed_contract.node import AGENT_ROOT, KERNEL_MODULE
from testbed_node import kmodules as kprobe

ROLE = "doctor"
TUN = "/dev/net/tun"
PROBE_TIMEOUT = TIMEOUTS.doctor
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


def short(text: str) -> str:
    """One line of at most 200 characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= 200 else text[:197] + "..."


def cause(e: Exception) -> str:
    """The innermost part of an engine error ("unable to apply caps: ...")."""
    text = " ".join(str(e).split()).removesuffix(": unknown")
    for marker in ("unable to start container process: ", "OCI runtime create failed: "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return short(text)


def privileged(provider: Provider, cluster: str, image: str | None) -> dict[str, Any]:
    """Whether the engine lets a --privileged container start (reported, never used)."""
    if image is None:
        return {"allowed": None, "reason": "not tested: no testbed image yet. The testbed never "
                                           "needs --privileged (nodes get explicit capabilities)"}
    try:
        provider.run_once(ContainerSpec(name=f"{cluster}-privileged", image=image,
                                        cluster=cluster, role=ROLE, command=["true"],
                                        privileged=True), timeout=PROBE_TIMEOUT)
    except ProviderError as e:
        return {"allowed": False, "error": short(str(e)), "cause": cause(e),
                "reason": f"this engine refuses --privileged ({cause(e)}); not a problem: the "
                          "testbed never needs it and gives node containers explicit "
                          "capabilities instead"}
    return {"allowed": True, "error": "",
            "reason": "allowed, but unused: node containers get explicit capabilities instead"}


def node_container(provider: Provider, cluster: str, image: str | None, local: bool
                   ) -> tuple[dict[str, Any], str | None]:
    """Start a container with exactly the node containers' security settings; its name."""
    if image is None:
        return {"ok": None, "reason": "not tested: no testbed image yet"}, None
    attempts = [[f"{TUN}:{TUN}:rwm"], []] if local and os.path.exists(TUN) else [[]]
    note, error = "", ""
    for i, devices in enumerate(attempts):
        spec = ContainerSpec(name=f"{cluster}-node-{i}", image=image, cluster=cluster, role=ROLE,
                             command=["sleep", "infinity"], cap_add=list(NODE_CAPS),
                             security_opt=list(NODE_SECURITY_OPT), sysctls=dict(NODE_SYSCTLS),
                             init=True, devices=devices)
        try:
            info = provider.run(spec)
        except ProviderError as e:
            error = cause(e)
            if devices:
                note = f"; passing {TUN} failed ({error})"
            continue
        if info.status != "running":
            error = f"it exited at once: {short(provider.logs(info.name, tail=5))}"
            continue
        extra = f", {TUN}" if devices else ""
        return {"ok": True, "image": image, "tun_device": bool(devices),
                "reason": f"start (explicit capabilities, unconfined seccomp/apparmor, "
                          f"sysctls, init{extra}){note}"}, info.name
    return {"ok": False, "image": image, "reason": error}, None


def agent_archive(with_pyroute2: bool) -> bytes:
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


def probe_inside(provider: Provider, container: str, image_name: str | None) -> dict[str, Any]:
    """Run `python3 -m testbed_node.kernel` in the container; its JSON report."""
    env = {"PYTHONPATH": AGENT_ROOT}
    if image_name != "node":  # the base image: bring the agent and pyroute2 along
        provider.put_archive(container, "/", agent_archive(with_pyroute2=True))
        env = {"PYTHONPATH": f"{AGENT_ROOT}:{AGENT_ROOT}/site"}
    res = provider.exec(container, ["python3", "-m", KERNEL_MODULE], env=env)
    lines = res.stdout.strip().splitlines()
    if res.exit_code != 0 or not lines:
        raise ValueError(f"the kernel probe exited {res.exit_code}: "
                         f"{res.stderr.strip() or res.stdout.strip()}")
    doc = json.loads(lines[-1])
    if not isinstance(doc, dict):
        raise ValueError(f"the kernel probe printed {lines[-1]!r}")
    return doc


def kernel(provider: Provider | None, container: str | None, image_name: str | None,
           local: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Kernel features from inside the node-capabilities container, else read-only on the host."""
    meta: dict[str, Any] = {"where": "", "method": "", "image": image_name, "error": ""}
    inside: dict[str, Any] | None = None
    if provider is not None and container is not None:
        try:
            inside = probe_inside(provider, container, image_name)
        except (ProviderError, ValueError) as e:
            meta["error"] = short(str(e))
    host = kprobe.read_only() if local else None
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
    features: dict[str, Any] = {}
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


def remove_stale(provider: Provider) -> int:
    """Probe containers older than STALE_AFTER seconds: their doctor run was killed."""
    try:
        found = provider.containers(role=ROLE)
    except ProviderError:
        return 0
    stale = {c.labels.get(LABEL_CLUSTER, "") for c in found
             if time.time() - c.created > STALE_AFTER}
    for cluster in sorted(stale - {""}):
        cleanup(provider, cluster)
    return sum(1 for c in found if c.labels.get(LABEL_CLUSTER, "") in stale)


def cleanup(provider: Provider, cluster: str) -> None:
    """Remove every probe container of this run, found by label, through the cluster handle
    (the one cleanup path: retried, and a Ctrl-C cannot interrupt it)."""
    from testbed.cluster.handle import Cluster

    Cluster(provider, cluster).down()
