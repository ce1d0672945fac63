"""The in-node agent inside a real node container, with Debian's bridge + host-local plugins."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
LABEL = "io.testbed.cluster=test-agent"
RUN = uuid.uuid4().hex[:8]
SUBNET = ipaddress.ip_network("10.250.0.0/24")
CONFLIST = {
    "cniVersion": "1.0.0", "name": "testnet",
    "plugins": [
        {"type": "bridge", "bridge": "tb0", "isGateway": True, "ipMasq": False,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": str(SUBNET)}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
# host-local rejects a /33: the bridge plugin hands its IPAM error back to the runtime.
BAD_CONFLIST = {"cniVersion": "1.0.0", "name": "badnet", "plugins": [
    {"type": "bridge", "bridge": "tb1",
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.251.0.0/33"}]]}}]}
NODE_CAPS = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "KILL"]


def docker(*args: str, input: str | None = None, check: bool = True,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI."""
    res = subprocess.run(["docker", *args], capture_output=True, text=True, input=input,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {res.stderr.strip()}")
    return res


@pytest.fixture(scope="module")
def node_image() -> str:
    """The node image from images/node, built (or found cached) by the project's builder."""
    from testbed import images
    from testbed.provider.docker import DockerProvider

    return images.ensure(DockerProvider().images, (images.by_name("node"),))["node"]


@pytest.fixture(scope="module")
def node(node_image: str) -> Iterator[str]:
    """One node container run like the orchestrator runs nodes: not privileged, no network."""
    name = f"test-agent-node-{RUN}"
    caps = [arg for cap in NODE_CAPS for arg in ("--cap-add", cap)]
    try:
        docker("run", "-d", "--name", name, "--hostname", name, "--label", LABEL,
               "--network", "none", *caps, "--security-opt", "seccomp=unconfined",
               "--security-opt", "apparmor=unconfined", "--sysctl", "net.ipv4.ip_forward=1",
               "--init", "-e", f"NODE_NAME={name}", node_image)
        rc, out = agent(name, "setup")
        assert rc == 0, out
        write(name, "/etc/cni/net.d/10-testnet.conflist", json.dumps(CONFLIST))
        write(name, "/etc/cni/bad.d/10-badnet.conflist", json.dumps(BAD_CONFLIST))
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)


def write(node: str, path: str, text: str) -> None:
    """Write a file inside the node."""
    docker("exec", "-i", node, "sh", "-c", f"mkdir -p \"$(dirname {path})\" && cat > {path}",
           input=text)


def agent(node: str, *args: str) -> tuple[int, Any]:
    """`python3 -m testbed_node ARGS` in the node: exit code and parsed JSON."""
    res = docker("exec", node, "python3", "-m", "testbed_node", *args, check=False,
                 timeout=120)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line from agent {args}: {res.stdout!r} " \
                            f"{res.stderr!r}"
    return res.returncode, json.loads(lines[0])


def ok(node: str, *args: str) -> Any:
    """An agent command that must succeed."""
    rc, out = agent(node, *args)
    assert rc == 0, f"agent {' '.join(args)}: {out}"
    return out


def sh(node: str, script: str) -> subprocess.CompletedProcess[str]:
    """A shell command inside the node."""
    return docker("exec", node, "sh", "-c", script, check=False, timeout=120)


@pytest.fixture
def pods(node: str) -> Iterator[list[str]]:
    """Names of the pods a test creates; all deleted afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        agent(node, "pod", "del", name)


def add(node: str, pods: list[str], name: str, *containers: str) -> dict[str, Any]:
    """Add a pod (deleted by the `pods` fixture)."""
    pods.append(name)
    args = [arg for spec in containers for arg in ("--container", spec)]
    rec: dict[str, Any] = ok(node, "pod", "add", name, *args)
    return rec


def test_setup_is_idempotent_and_node_is_ready(node: str) -> None:
    out = ok(node, "setup")
    assert out["linked"] == []  # all linked by the fixture's first run
    assert {"bridge", "host-local", "portmap", "loopback"} <= set(out["kept"])
    ready = ok(node, "ready", "--timeout", "5")
    assert ready["ready"] is True
    assert ready["conf"] == "/etc/cni/net.d/10-testnet.conflist"
    assert (ready["missing"], ready["plugins"]) == ([], ["bridge", "host-local", "portmap"])
    version = ok(node, "cni", "version", "bridge")
    assert "1.0.0" in version["supportedVersions"]


def test_pod_gets_an_address_and_answers_another_pod(node: str, pods: list[str]) -> None:
    a = add(node, pods, "web-a")
    b = add(node, pods, "web-b", "app=http:8080", "bulk=pyhttp:8081")
    for rec in (a, b):
        assert ipaddress.ip_address(rec["ip"]) in SUBNET
        assert rec["cidr"] == str(SUBNET) and rec["gateway"] == "10.250.0.1"
        assert rec["netns"] == f"/var/run/netns/{rec['name']}"
        assert rec["containers"][0]["alive"] is True
        assert len(rec["container_id"]) == 64
    assert a["ip"] != b["ip"]
    res = ok(node, "probe", "web-b", f"http://{a['ip']}:8080/", "--count", "3")
    assert res["ok"] is True, res
    assert res["status"] == 200 and len(res["samples"]) == 3 and res["latency_ms"] > 0
    assert {k: res["body"][k] for k in ("pod", "node", "ip", "container", "port")} == {
        "pod": "web-a", "node": node, "ip": a["ip"], "container": "app", "port": 8080}
    assert res["body"]["client"] == b["ip"]  # bridged, not NATed
    assert res["body"]["server"] == "nginx"  # the fast workload is Debian's nginx
    pid = a["containers"][0]["pid"]
    assert sh(node, f"grep -qs 'nginx: master' /proc/{pid}/cmdline").returncode == 0
    # the Python server beside it: the same identity, and bulk bytes
    back = ok(node, "probe", "web-a", f"http://{b['ip']}:8081/bytes?n=100000", "--count", "1")
    assert back["ok"] is True
    side = ok(node, "probe", "web-a", f"http://{b['ip']}:8081/", "--count", "1")
    assert side["body"]["container"] == "bulk" and side["body"]["client"] == a["ip"]
    names = [p["name"] for p in ok(node, "pod", "list")]
    assert {"web-a", "web-b"} <= set(names)
    shown = ok(node, "pod", "show", "web-a")
    eth0 = next(link for link in shown["links"] if link["name"] == "eth0")
    assert eth0["addresses"] == [f"{a['ip']}/24"] and eth0["mac"] == a["mac"]


def test_probe_many_asks_every_target_from_inside_the_pod(node: str, pods: list[str]) -> None:
    a = add(node, pods, "pm-a")
    b = add(node, pods, "pm-b", "app=http:8080", "side=http:9090")
    targets = [{"url": f"http://{a['ip']}:8080/", "count": 2, "timeout": 2},
               {"url": f"http://{a['ip']}:9/", "count": 1, "timeout": 1},
               {"url": "http://127.0.0.1:9090/", "count": 1, "timeout": 2}]
    first, closed, local = ok(node, "probe-many", "pm-b", json.dumps(targets))
    assert first["ok"] and first["body"]["pod"] == "pm-a" and len(first["samples"]) == 2
    assert first["body"]["client"] == b["ip"] and first["src"] == "pm-b"
    assert first["latency_ms"] > 0
    assert not closed["ok"] and "Connection refused" in closed["error"]
    assert local["ok"] and local["body"]["container"] == "side"  # pm-b's own netns
    rc, out = agent(node, "probe-many", "nobody", json.dumps(targets))
    assert rc == 1 and "nobody" in out["error"]


def test_two_container_pod_talks_over_localhost(node: str, pods: list[str]) -> None:
    add(node, pods, "duo", "web=http:8080", "side=http:9090", "nap=sleep")
    res = ok(node, "probe", "duo", "http://127.0.0.1:9090/", "--count", "2")
    assert res["ok"] and res["body"]["container"] == "side" and res["body"]["pod"] == "duo"
    out = docker("exec", node, "python3", "-m", "testbed_node", "pod", "exec", "duo", "--",
                 "curl", "-s", "http://localhost:8080/")
    assert json.loads(out.stdout)["container"] == "web"
    code = docker("exec", node, "python3", "-m", "testbed_node", "pod", "exec", "duo", "--",
                  "sh", "-c", "echo to-stderr >&2; exit 3", check=False)
    assert (code.returncode, code.stderr.strip()) == (3, "to-stderr")
    # the pod's processes really are in its namespace, the node's are not
    rec = ok(node, "pod", "show", "duo")
    pid = rec["containers"][1]["pid"]
    same = sh(node, f"[ $(stat -Lc %i /proc/{pid}/ns/net) = $(stat -Lc %i /var/run/netns/duo) ]"
                    f" && [ $(stat -Lc %i /proc/1/ns/net) != $(stat -Lc %i /proc/{pid}/ns/net) ]")
    assert same.returncode == 0


def test_pod_del_frees_its_address_and_is_idempotent(node: str, pods: list[str]) -> None:
    rec = add(node, pods, "gone")
    reservations = "/var/lib/cni/networks/testnet"
    cache = f"/var/lib/cni/results/testnet-{rec['container_id']}-eth0"
    assert sh(node, f"test -f {reservations}/{rec['ip']} && test -f {cache}").returncode == 0
    out = ok(node, "pod", "del", "gone")
    assert out["deleted"] is True and out["ip"] == rec["ip"]
    assert set(out["containers"].values()) <= {"stopped", "killed"}
    assert sh(node, f"test -e {reservations}/{rec['ip']}").returncode != 0
    assert sh(node, f"test -e {cache}").returncode != 0
    assert sh(node, "test -e /var/run/netns/gone").returncode != 0
    pid = rec["containers"][0]["pid"]
    assert sh(node, f"grep -qs nginx /proc/{pid}/cmdline").returncode != 0
    assert "gone" not in [p["name"] for p in ok(node, "pod", "list")]
    again = ok(node, "pod", "del", "gone")
    assert again == {"name": "gone", "deleted": False, "reason": "no such pod"}
    rec2 = add(node, pods, "gone")
    assert ipaddress.ip_address(rec2["ip"]) in SUBNET
    assert sh(node, f"test -f {reservations}/{rec2['ip']}").returncode == 0


CNI_DEL_TWICE = """
import json
from testbed_node import cni, netns
path = netns.create("twice")
runtime = cni.CniRuntime()
conf = cni.load_dir()
rt = cni.RuntimeConf(container_id="feedface0001", netns=path)
result = runtime.add(conf, rt)
runtime.delete(conf, rt)
runtime.delete(conf, rt)
netns.delete("twice")
runtime.delete(conf, rt)
print(json.dumps(cni.summarize(result)))
"""


def test_cni_del_is_idempotent(node: str) -> None:
    res = docker("exec", node, "python3", "-c", CNI_DEL_TWICE, check=False)
    assert res.returncode == 0, res.stderr
    ip = json.loads(res.stdout)["ip"]
    assert ipaddress.ip_address(ip) in SUBNET
    assert sh(node, f"test -e /var/lib/cni/networks/testnet/{ip}").returncode != 0


def test_plugin_error_comes_back_as_a_cni_error(node: str) -> None:
    rc, out = agent(node, "--conf-dir", "/etc/cni/bad.d", "pod", "add", "broken")
    assert rc == 1
    assert out["error"].startswith("CNI ADD failed in plugin 'bridge' of network 'badnet': ")
    assert "10.251.0.0/33" in out["error"]
    assert sh(node, "test -e /var/run/netns/broken || "
                    "test -e /var/lib/testbed/pods/broken.json").returncode != 0
    rc, out = agent(node, "pod", "show", "broken")
    assert rc == 1 and "no pod named 'broken'" in out["error"]


def test_cni_check_passes_then_catches_a_broken_pod(node: str, pods: list[str]) -> None:
    rec = add(node, pods, "chk")
    out = ok(node, "cni", "check", "chk")
    assert (out["checked"], out["network"]) == (True, "testnet")
    broken = docker("exec", node, "python3", "-m", "testbed_node", "pod", "exec", "chk", "--",
                    "ip", "addr", "del", f"{rec['ip']}/24", "dev", "eth0", check=False)
    assert broken.returncode == 0, broken.stderr
    rc, err = agent(node, "cni", "check", "chk")
    assert rc == 1 and err["error"].startswith("CNI CHECK failed in plugin 'bridge'"), err


def test_add_many_wires_every_pod_or_none(node: str, pods: list[str]) -> None:
    spec = json.dumps([{"name": "many-a"}, {"name": "many-b", "containers": ["web=http:9090"]}])
    pods += ["many-a", "many-b"]
    a, b = ok(node, "pod", "add-many", spec)
    assert (a["name"], b["name"]) == ("many-a", "many-b") and a["ip"] != b["ip"]
    assert b["containers"][0]["port"] == 9090 and b["containers"][0]["alive"] is True
    # lo is up (the loopback plugin's ADD), so the pod's own processes reach each other
    res = ok(node, "probe", "many-b", "http://127.0.0.1:9090/", "--count", "1")
    assert res["ok"] and res["body"]["pod"] == "many-b"
    cache = f"/var/lib/cni/results/cni-loopback-{a['container_id']}-lo"
    assert sh(node, f"test -f {cache}").returncode == 0
    ok(node, "pod", "del", "many-a")
    assert sh(node, f"test -e {cache}").returncode != 0
    # the second pod's container exits at once: the first pod is undone with it
    bad = json.dumps([{"name": "many-c"}, {"name": "many-d", "containers": ["x=cmd:false"]}])
    rc, out = agent(node, "pod", "add-many", bad)
    assert rc == 1 and out["error"].startswith("pod many-d: container x exited"), out
    names = {p["name"] for p in ok(node, "pod", "list")}
    assert not {"many-c", "many-d"} & names
    assert sh(node, "test -e /var/run/netns/many-c || test -e /var/run/netns/many-d"
              ).returncode != 0
    rc, out = agent(node, "pod", "add-many", json.dumps([{"name": "x"}, {"name": "x"}]))
    assert rc == 2 and "repeat" in out["error"], out
