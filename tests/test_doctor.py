"""`python -m testbed doctor`: the report matches what this machine's kernel really offers."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from testbed import doctor
from testbed_node import kernel

# Kernel modules behind each feature, and host files that prove it is there. Written out
# here on purpose instead of reusing the probe's own tables: the test checks the probe.
MODULE = {"vxlan": "vxlan", "ipip": "ipip", "gre": "ip_gre", "wireguard": "wireguard",
          "openvswitch": "openvswitch", "ipvs": "ip_vs", "netem": "sch_netem",
          "tbf": "sch_tbf", "htb": "sch_htb", "bridge": "bridge", "veth": "veth",
          "tun": "tun", "ipset": "ip_set", "conntrack": "nf_conntrack",
          "br_netfilter": "br_netfilter"}
PROOF = {"ipip": "/sys/class/net/tunl0", "gre": "/sys/class/net/gre0",
         "ipvs": "/proc/net/ip_vs", "conntrack": "/proc/net/nf_conntrack",
         "br_netfilter": "/proc/sys/net/bridge/bridge-nf-call-iptables",
         "iptables_legacy": "/proc/net/ip_tables_names"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def host_says(feature: str) -> bool | None:
    """True if the host's /sys, /proc or modules.builtin show the feature; None if silent."""
    mod = MODULE.get(feature)
    if mod and Path("/sys/module", mod).exists():
        return True
    if feature in PROOF and Path(PROOF[feature]).exists():
        return True
    if feature == "tun" and Path("/dev/net/tun").exists() \
            and stat.S_ISCHR(Path("/dev/net/tun").stat().st_mode):
        return True
    builtin = Path("/lib/modules", os.uname().release, "modules.builtin")
    if mod and builtin.exists() and any(line.rsplit("/", 1)[-1] == f"{mod}.ko"
                                        for line in builtin.read_text().splitlines()):
        return True
    return None


def doctor_containers(label: str) -> list[Any]:
    return docker.from_env().containers.list(all=True, filters={"label": label})


# --- without Docker --------------------------------------------------------------------------

def test_unreachable_docker_is_one_line_and_exit_2() -> None:
    res = cli("doctor", env={"DOCKER_HOST": "unix:///nonexistent"})
    assert res.returncode == 2, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Docker" in lines[0], res.stderr
    assert res.stdout.strip() == ""


def test_unreachable_docker_still_prints_json() -> None:
    res = cli("doctor", "--json", env={"DOCKER_HOST": "unix:///nonexistent"})
    assert res.returncode == 2, res
    report = json.loads(res.stdout)
    assert report["ok"] is False and "Docker" in report["blocking"]
    assert report["docker"]["reachable"] is False
    assert set(report["kernel"]) == set(kernel.FEATURES)
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [
        f"ERROR: {report['blocking']}"]


def test_read_only_probe_reads_modules_tables(tmp_path: Path) -> None:
    release = os.uname().release
    (tmp_path / "sys" / "module" / "vxlan").mkdir(parents=True)
    mods = tmp_path / "lib" / "modules" / release
    mods.mkdir(parents=True)
    (mods / "modules.builtin").write_text("kernel/net/bridge/bridge.ko\n"
                                          "kernel/drivers/net/veth.ko\n")
    (mods / "modules.dep").write_text("kernel/net/sched/sch_netem.ko.xz:\n"
                                      "kernel/net/ipv4/ipip.ko: kernel/net/ipv4/tunnel4.ko\n")
    doc = kernel.read_only(str(tmp_path))["features"]
    assert doc["vxlan"]["present"] is True and "loaded" in doc["vxlan"]["detail"]
    assert doc["bridge"]["present"] is True and "built in" in doc["bridge"]["detail"]
    assert doc["netem"]["present"] is True and "loadable" in doc["netem"]["detail"]
    assert doc["ipip"]["present"] is True
    assert doc["wireguard"]["present"] is False
    # Without /lib/modules, absence cannot be told: unknown, never "absent".
    (mods / "modules.builtin").unlink()
    (mods / "modules.dep").unlink()
    doc = kernel.read_only(str(tmp_path))["features"]
    assert doc["wireguard"]["present"] is None
    assert doc["vxlan"]["present"] is True


def test_render_lists_what_absent_features_rule_out(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    features = {f: {"present": True, "detail": "ok", "rules_out": [], "source": "container"}
                for f in kernel.FEATURES}
    features["ipip"] = {"present": False, "detail": "no", "source": "container",
                        "rules_out": doctor.RULES_OUT["ipip"]}
    report = {
        "ok": True, "blocking": "", "problems": [], "notes": [],
        "docker": {"reachable": True, "engine_version": "1", "api_version": "1.41", "os": "x",
                   "kernel": "k", "storage_driver": "overlay2", "cgroup_version": "2",
                   "rootless": False},
        "privileged": {"allowed": False, "cause": "unable to apply caps", "reason": "r"},
        "node_capabilities": {"ok": True, "reason": "start fine"},
        "kernel_probe": {"where": "inside", "method": "netlink", "error": ""},
        "kernel": features,
        "disk": {"ok": True, "free_bytes": 10 * 2**30, "path": "/", "what": "root"},
        "images": [], "tools": {"ok": True, "needed": False, "mmdebstrap": "/usr/bin/x"},
    }
    doctor.render(report)
    out = capsys.readouterr().out
    assert "calico IPIP pools" in out and "✓" in out and "Ready" in out


# --- with Docker -----------------------------------------------------------------------------

@pytest.mark.docker
def test_doctor_matches_this_machine() -> None:
    start = time.monotonic()
    res = cli("doctor", "--json")
    elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] is True and report["blocking"] == ""
    assert elapsed < 60, f"doctor took {elapsed:.1f}s"
    d = report["docker"]
    assert d["reachable"] and d["engine_version"] and d["api_version"] and d["storage_driver"]
    assert isinstance(report["privileged"]["allowed"], bool | None)
    assert report["privileged"]["reason"]
    assert report["disk"]["free_bytes"] > 0 and report["disk"]["ok"] is True
    assert {r["name"] for r in report["images"]} >= {"base", "node"}

    # Nothing the probe started is left behind.
    assert report["probe_label"].startswith("io.testbed.cluster=doctor-")
    assert doctor_containers(report["probe_label"]) == []

    feats = report["kernel"]
    assert set(feats) == set(kernel.FEATURES)
    for name, f in feats.items():
        assert f["rules_out"] == (doctor.RULES_OUT[name] if f["present"] is False else [])
    if not d["local"]:
        pytest.skip("the Docker engine runs on another kernel: nothing to compare with")
    assert feats["veth"]["present"] and feats["bridge"]["present"]
    if report["node_capabilities"]["ok"]:
        # Probed by doing it inside a node-capabilities container: every answer is definite.
        assert report["kernel_probe"]["method"] == "netlink"
        assert all(isinstance(f["present"], bool) for f in feats.values()), feats
    for name, f in feats.items():
        evidence = host_says(name)
        if evidence:
            assert f["present"] is True, (name, f)
        if f["present"] is False:
            assert evidence is None, (name, f)
    # The bridge netfilter sysctl is either there on the host or not: both must agree.
    assert feats["br_netfilter"]["present"] == Path(PROOF["br_netfilter"]).exists()


@pytest.mark.docker
def test_ctrl_c_removes_probe_containers() -> None:
    """SIGINT while a probe container exists: exit 130 and nothing labelled is left."""
    token = uuid.uuid4().hex[:8]
    label = f"io.testbed.cluster=doctor-{token}"
    # Fix this run's random probe label so the test watches only its own containers.
    code = (f"import secrets; secrets.token_hex = lambda n=None: {token!r}; "
            "from testbed.cli import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", code, "doctor", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    api = docker.from_env().api
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if api.containers(all=True, filters={"label": label}):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.01)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if proc.returncode == 0:
        pytest.skip("doctor finished before its probe container was seen")
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert api.containers(all=True, filters={"label": label}) == []
