"""The in-node agent on the host, no Docker: config loading, the CNI protocol, specs, workload."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed_contract.agent import ProbeTarget
from testbed_node import UsageError, cni, podspec, probe, workload

REPO = Path(__file__).resolve().parent.parent

# A FAKE plugin: it exercises the runtime's side of the CNI protocol (env, stdin, prevResult,
# result and error parsing), not networking. The real plugins run in test_agent_node.py.
FAKE_PLUGIN = """#!{python}
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND")
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
log = conf.get("fakeLog") or os.environ.get("FAKE_CNI_LOG")
if log:
    with open(log, "a") as f:
        f.write(json.dumps({{"type": conf.get("type"), "command": cmd, "env": env,
                             "stdin": conf}}) + "\\n")
if conf.get("fakeSleep"):
    time.sleep(conf["fakeSleep"])
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": conf["cniVersion"],
                       "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}}))
    sys.exit(0)
if conf.get("fakeFail"):
    print(json.dumps(dict(conf["fakeFail"], cniVersion=conf["cniVersion"])))
    sys.exit(1)
if conf.get("fakeStderr"):
    sys.stderr.write(conf["fakeStderr"] + "\\n")
    sys.exit(3)
if cmd == "ADD":
    if "fakeResult" in conf:
        print(json.dumps(conf["fakeResult"]))
        sys.exit(0)
    prev = conf.get("prevResult")
    if prev is None:
        result = {{"cniVersion": conf["cniVersion"],
                   "interfaces": [{{"name": "br0", "mac": "02:00:00:00:00:01"}},
                                  {{"name": os.environ["CNI_IFNAME"],
                                    "mac": "02:00:00:00:00:02",
                                    "sandbox": os.environ["CNI_NETNS"]}}],
                   "ips": [{{"address": "10.9.0.7/24", "gateway": "10.9.0.1", "interface": 1}}],
                   "routes": [{{"dst": "0.0.0.0/0"}}], "dns": {{}}}}
    else:
        result = dict(prev)
        result["interfaces"] = prev["interfaces"] + [{{"name": conf["type"] + "-if"}}]
    print(json.dumps(result))
"""


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A CNI_PATH holding the fake plugin under several type names."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = FAKE_PLUGIN.format(python=sys.executable)
    for name in ("fake-a", "fake-b", "fake-c"):
        path = bin_dir / name
        path.write_text(script)
        path.chmod(0o755)
    return bin_dir


@pytest.fixture
def runtime(plugin_dir: Path, tmp_path: Path) -> cni.CniRuntime:
    """A runtime over the fake plugins with its cache in tmp_path."""
    return cni.CniRuntime([str(tmp_path / "empty"), str(plugin_dir)],
                          cache_dir=str(tmp_path / "cache"), timeout=20)


class CallLog:
    """Every fake plugin invocation, in order (the fake appends one JSON line per run)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        """The invocations so far."""
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return [json.loads(ln) for ln in lines]

    def clear(self) -> None:
        """Forget the invocations so far."""
        self.path.unlink(missing_ok=True)


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CallLog:
    """The fake plugins' invocation log."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CNI_LOG", str(log))
    return CallLog(log)


def conflist(version: str = "1.0.0", *, disable_check: bool = False,
             **extra: dict[str, Any]) -> cni.NetworkConfigList:
    """Two chained fake plugins; the first declares the portMappings capability."""
    doc = {"cniVersion": version, "name": "fakenet", "disableCheck": disable_check,
           "plugins": [dict({"type": "fake-a", "capabilities": {"portMappings": True},
                             "ipam": {"type": "fake-c"}}, **extra.get("a", {})),
                       dict({"type": "fake-b", "capabilities": {"bandwidth": True}},
                            **extra.get("b", {}))]}
    return cni.conflist_from_bytes(json.dumps(doc).encode(), "test.conflist")


def rt() -> cni.RuntimeConf:
    """One attachment's runtime arguments."""
    return cni.RuntimeConf(container_id="c0ffee01", netns="/var/run/netns/fake", ifname="eth0",
                           args=[("IgnoreUnknown", "1"), ("POD", "p1")])


# -- configuration loading -----------------------------------------------------------------

def _write(d: Path, name: str, doc: Any) -> Path:
    path = d / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_load_dir_takes_the_lexically_first_config(tmp_path: Path) -> None:
    _write(tmp_path, "20-list.conflist", {"cniVersion": "1.0.0", "name": "listnet",
                                         "plugins": [{"type": "bridge"}]})
    _write(tmp_path, "10-single.conf", {"cniVersion": "0.4.0", "name": "single",
                                        "type": "ptp", "ipam": {"type": "host-local"}})
    _write(tmp_path, "05-notes.txt", "not a config")
    conf = cni.load_dir(tmp_path)
    assert (conf.name, conf.cni_version, conf.source) == (
        "single", "0.4.0", str(tmp_path / "10-single.conf"))
    # a single-plugin .conf is wrapped as a one-plugin list, like libcni
    assert [p["type"] for p in conf.plugins] == ["ptp"]
    assert json.loads(conf.raw) == {"cniVersion": "0.4.0", "name": "single",
                                    "plugins": [conf.plugins[0]]}
    (tmp_path / "10-single.conf").unlink()
    _write(tmp_path, "15-x.json", {"cniVersion": "1.0.0", "name": "jsonnet", "type": "x"})
    assert cni.load_dir(tmp_path).name == "jsonnet"


def test_load_dir_skips_invalid_files_and_says_why(tmp_path: Path) -> None:
    _write(tmp_path, "00-broken.conflist", "{not json")
    _write(tmp_path, "01-empty.conflist", {"cniVersion": "1.0.0", "name": "e", "plugins": []})
    _write(tmp_path, "02-notype.conf", {"cniVersion": "1.0.0", "name": "n"})
    _write(tmp_path, "03-version.conflist", {"cniVersion": "9.9.9", "name": "v",
                                             "plugins": [{"type": "bridge"}]})
    with pytest.raises(cni.CniError) as err:
        cni.load_dir(tmp_path)
    text = str(err.value)
    assert str(tmp_path) in text
    for bit in ("invalid JSON", "non-empty list", "no \"type\"", "unsupported cniVersion"):
        assert bit in text
    _write(tmp_path, "04-good.conflist", {"cniVersion": "0.3.1", "name": "good",
                                          "plugins": [{"type": "bridge"}]})
    assert cni.load_dir(tmp_path).name == "good"


def test_load_dir_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(cni.CniError, match="no CNI network configuration"):
        cni.load_dir(tmp_path / "absent")


def test_plugin_types_include_ipam_and_delegate() -> None:
    doc = {"cniVersion": "0.3.1", "name": "cbr0", "plugins": [
        {"type": "flannel", "delegate": {"type": "bridge", "ipam": {"type": "host-local"}}},
        {"type": "calico", "ipam": {"type": "calico-ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    conf = cni.conflist_from_bytes(json.dumps(doc).encode())
    assert conf.plugin_types() == ["flannel", "bridge", "calico", "calico-ipam", "portmap"]


# -- the plugin protocol -------------------------------------------------------------------

def test_add_chains_prev_result_and_injects_config(
        runtime: cni.CniRuntime, calls: CallLog, plugin_dir: Path,
        tmp_path: Path) -> None:
    netconf = conflist()
    result = runtime.add(netconf, rt())
    first, second = log = calls.all()
    assert [c["type"] for c in log] == ["fake-a", "fake-b"]
    for call in log:
        assert call["command"] == "ADD"
        assert call["stdin"]["name"] == "fakenet"
        assert call["stdin"]["cniVersion"] == "1.0.0"
        assert call["env"] == {
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee01",
            "CNI_NETNS": "/var/run/netns/fake", "CNI_IFNAME": "eth0",
            "CNI_ARGS": "IgnoreUnknown=1;POD=p1",
            "CNI_PATH": f"{tmp_path / 'empty'}:{plugin_dir}"}
    assert "prevResult" not in first["stdin"]
    # runtimeConfig only for declared capabilities the runtime has args for
    assert first["stdin"]["runtimeConfig"] == {"portMappings": []}
    assert "runtimeConfig" not in second["stdin"]
    # the second plugin got the first's result verbatim; the list's result is the last one
    assert second["stdin"]["prevResult"]["interfaces"][1]["sandbox"] == "/var/run/netns/fake"
    assert [i["name"] for i in result["interfaces"]] == ["br0", "eth0", "fake-b-if"]
    assert second["stdin"]["prevResult"] == {**result, "interfaces": result["interfaces"][:2]}
    # cached like libcni: results/<network>-<containerid>-<ifname>, kind cniCacheV1
    path = tmp_path / "cache" / "results" / "fakenet-c0ffee01-eth0"
    cached = json.loads(path.read_text())
    assert cached["kind"] == "cniCacheV1"
    assert (cached["containerId"], cached["ifName"], cached["networkName"]) == (
        "c0ffee01", "eth0", "fakenet")
    assert base64.b64decode(cached["config"]) == netconf.raw
    assert cached["result"] == result
    assert cached["cniArgs"] == [["IgnoreUnknown", "1"], ["POD", "p1"]]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    cached_conf = runtime.cached_config("fakenet", rt())
    assert cached_conf is not None and cached_conf.plugins == netconf.plugins


def test_del_runs_in_reverse_with_cached_result_and_is_idempotent(
        runtime: cni.CniRuntime, calls: CallLog) -> None:
    netconf = conflist()
    result = runtime.add(netconf, rt())
    calls.clear()
    runtime.delete(netconf, rt())
    log = calls.all()
    assert [(c["type"], c["command"]) for c in log] == [("fake-b", "DEL"), ("fake-a", "DEL")]
    assert all(c["stdin"]["prevResult"] == result for c in log)
    assert runtime.cached_result("fakenet", rt()) is None
    calls.clear()
    runtime.delete(netconf, rt())  # nothing cached any more: DEL still runs, without prevResult
    log = calls.all()
    assert [c["type"] for c in log] == ["fake-b", "fake-a"]
    assert all("prevResult" not in c["stdin"] for c in log)


def test_del_before_0_4_0_sends_no_prev_result(runtime: cni.CniRuntime, calls: CallLog) -> None:
    netconf = conflist("0.3.1")
    runtime.add(netconf, rt())
    calls.clear()
    runtime.delete(netconf, rt())
    log = calls.all()
    assert len(log) == 2
    assert all("prevResult" not in c["stdin"] for c in log)


def test_check_uses_cached_result_and_honours_disable_check(
        runtime: cni.CniRuntime, calls: CallLog) -> None:
    netconf = conflist()
    with pytest.raises(cni.CniError, match="no cached result"):
        runtime.check(netconf, rt())
    result = runtime.add(netconf, rt())
    calls.clear()
    assert runtime.check(netconf, rt()) is True
    log = calls.all()
    assert [(c["type"], c["command"]) for c in log] == [("fake-a", "CHECK"), ("fake-b", "CHECK")]
    assert all(c["stdin"]["prevResult"] == result for c in log)
    calls.clear()
    assert runtime.check(conflist(disable_check=True), rt()) is False
    assert calls.all() == []
    with pytest.raises(cni.CniError, match="does not support the CHECK command"):
        runtime.check(conflist("0.3.1"), rt())


def test_plugin_error_json_becomes_a_cni_error_with_context(
        runtime: cni.CniRuntime, calls: CallLog) -> None:
    netconf = conflist(b={"fakeFail": {"code": 7, "msg": "bad bridge name",
                                       "details": "name too long"}})
    with pytest.raises(cni.CniError) as err:
        runtime.add(netconf, rt())
    e = err.value
    assert (e.code, e.msg, e.details, e.plugin, e.command, e.network) == (
        7, "bad bridge name", "name too long", "fake-b", "ADD", "fakenet")
    assert str(e) == ("CNI ADD failed in plugin 'fake-b' of network 'fakenet': bad bridge name "
                      "(name too long) [code 7: invalid network config]")
    assert runtime.cached_result("fakenet", rt()) is None  # a failed ADD caches nothing


def test_plugin_failure_without_json_reports_stderr(runtime: cni.CniRuntime) -> None:
    netconf = conflist(a={"fakeStderr": "panic: cannot open /run/flannel/subnet.env"})
    with pytest.raises(cni.CniError, match=r"subnet\.env") as err:
        runtime.add(netconf, rt())
    assert err.value.plugin == "fake-a"
    assert err.value.code is None


def test_missing_plugin_and_timeout(runtime: cni.CniRuntime) -> None:
    doc = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "absent"}]}
    with pytest.raises(cni.CniError, match="failed to find plugin 'absent' in path"):
        runtime.add(cni.conflist_from_bytes(json.dumps(doc).encode()), rt())
    runtime.timeout = 0.5
    with pytest.raises(cni.CniError, match=r"no answer within 0\.5s"):
        runtime.add(conflist(a={"fakeSleep": 5}), rt())


def test_invalid_plugin_result_is_rejected(runtime: cni.CniRuntime) -> None:
    bad = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
           "ips": [{"address": "10.0.0.2/24", "interface": 3}]}
    with pytest.raises(cni.CniError, match=r"ips\[0\].interface 3 is not an index") as err:
        runtime.add(conflist(a={"fakeResult": bad}), rt())
    assert (err.value.plugin, err.value.command) == ("fake-a", "ADD")


def test_invalid_container_id_and_ifname(runtime: cni.CniRuntime) -> None:
    with pytest.raises(cni.CniError, match="invalid container id"):
        runtime.add(conflist(), cni.RuntimeConf(container_id="-bad", netns="/x"))
    with pytest.raises(cni.CniError, match="invalid interface name"):
        runtime.add(conflist(), cni.RuntimeConf(container_id="ok", netns="/x",
                                                ifname="a-very-long-ifname"))


def test_version(runtime: cni.CniRuntime, calls: CallLog) -> None:
    info = runtime.version("fake-a")
    assert info["supportedVersions"] == ["0.3.1", "0.4.0", "1.0.0"]
    (call,) = calls.all()
    assert call["env"]["CNI_COMMAND"] == "VERSION"
    assert call["stdin"] == {"cniVersion": "1.0.0"}


# -- results and errors --------------------------------------------------------------------

GOOD = {"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                       {"name": "eth0", "mac": "02:42:0a:f4:01:05", "sandbox": "/run/netns/p"}],
        "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}], "dns": {}}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.pop("cniVersion"), "cniVersion"),
    (lambda r: r.update(interfaces={}), "interfaces must be a list"),
    (lambda r: r["interfaces"].append({"mac": "x"}), r"interfaces\[2\] needs a name"),
    (lambda r: r["ips"][0].update(address="10.244.1.5"), "CIDR"),
    (lambda r: r["ips"][0].update(address="300.1.1.1/24"), "CIDR"),
    (lambda r: r["ips"][0].update(gateway="nope"), "not an IP address"),
    (lambda r: r["ips"][0].update(interface=-1), "not an index"),
    (lambda r: r["ips"][0].update(interface=True), "not an index"),
    (lambda r: r["routes"].append({"gw": "10.0.0.1"}), r"routes\[1\].dst"),
    (lambda r: r.update(dns=[]), "dns must be an object"),
])
def test_validate_result_rejects(mutate: Any, message: str) -> None:
    result = json.loads(json.dumps(GOOD))
    assert cni.validate_result(result) == result
    mutate(result)
    with pytest.raises(cni.CniError, match=message):
        cni.validate_result(result)


def test_validate_legacy_result_and_summary() -> None:
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.4/16", "gateway": "10.1.0.1"}}
    assert cni.validate_result(legacy) is legacy
    assert cni.summarize(legacy)["ip"] == "10.1.0.4"
    assert cni.summarize(GOOD) == {"ip": "10.244.1.5", "address": "10.244.1.5/24",
                                   "cidr": "10.244.1.0/24", "gateway": "10.244.1.1",
                                   "mac": "02:42:0a:f4:01:05"}


def test_parse_error() -> None:
    e = cni.parse_error(b'{"cniVersion":"1.0.0","code":11,"msg":"etcd unavailable"}', b"", 1,
                        plugin="calico", command="DEL", network="k8s-pod-network")
    assert (e.code, e.msg, e.details) == (11, "etcd unavailable", "")
    assert str(e) == ("CNI DEL failed in plugin 'calico' of network 'k8s-pod-network': "
                      "etcd unavailable [code 11: try again later]")
    e = cni.parse_error(b"", b"line1\nline2\n", 2, plugin="x", command="ADD")
    assert e.code is None and e.msg == "line1 | line2"
    assert "exit status 5" in str(cni.parse_error(b"", b"", 5))


# -- pods: container specs -----------------------------------------------------------------

@pytest.mark.parametrize(("text", "spec"), [
    ("app=http:8080", podspec.ContainerSpec("app", "http", port=8080)),
    ("side=sleep", podspec.ContainerSpec("side", "sleep")),
    ("w=cmd:python3 -m http.server 9000",
     podspec.ContainerSpec("w", "cmd", argv=("python3", "-m", "http.server", "9000"))),
    ("q=cmd:sh -c 'echo a; sleep 1'", podspec.ContainerSpec("q", "cmd",
                                                         argv=("sh", "-c", "echo a; sleep 1"))),
])
def test_container_spec_parsing(text: str, spec: podspec.ContainerSpec) -> None:
    assert podspec.parse_container_spec(text) == spec


@pytest.mark.parametrize("text", [
    "app", "=http:80", "App=http:80", "app=http:", "app=http:0", "app=http:70000",
    "app=http:x", "app=sleep:5", "app=cmd:", "app=cmd:'unclosed", "app=ftp:21",
])
def test_container_spec_errors(text: str) -> None:
    with pytest.raises(UsageError):
        podspec.parse_container_spec(text)


def test_container_specs_must_be_unique() -> None:
    parse = podspec.parse_container_spec
    with pytest.raises(UsageError, match="duplicate container"):
        podspec.check_specs([parse("a=sleep"), parse("a=http:80")])
    with pytest.raises(UsageError, match="share port"):
        podspec.check_specs([parse("a=http:80"), parse("b=http:80")])
    assert podspec.parse_container_spec("web=http:8080").command()[1:3] == [
        "-m", "testbed_node.workload"]


# -- the command line ----------------------------------------------------------------------

def agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python3 -m testbed_node ...` on the host."""
    return subprocess.run([sys.executable, "-m", "testbed_node", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_cli_bad_arguments_exit_2_with_a_json_error() -> None:
    for args in (["pod", "add", "x", "--container", "nope"], ["bogus"], ["pod", "add", "X_Y"],
                 ["probe", "p", "http://x/", "--count", "0"],
                 ["probe-many", "p", '[{"url": "http://x/", "count": 0}]'],
                 ["probe-many", "p", '{"url": "http://x/"}']):
        res = agent(*args)
        assert res.returncode == 2, (args, res)
        assert set(json.loads(res.stdout)) == {"error"}


def test_cli_ready_and_version(tmp_path: Path, plugin_dir: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    res = agent("--conf-dir", str(conf_dir), "--cni-path", str(plugin_dir), "ready")
    assert res.returncode == 0
    assert json.loads(res.stdout)["ready"] is False
    _write(conf_dir, "10-x.conflist", {"cniVersion": "1.0.0", "name": "x", "plugins": [
        {"type": "fake-a", "ipam": {"type": "host-local"}}, {"type": "fake-b"}]})
    state = json.loads(agent("--conf-dir", str(conf_dir), "--cni-path", str(plugin_dir),
                             "ready", "--timeout", "0.2").stdout)
    assert (state["ready"], state["conf"], state["missing"]) == (
        False, str(conf_dir / "10-x.conflist"), ["host-local"])
    (plugin_dir / "host-local").symlink_to(plugin_dir / "fake-a")
    state = json.loads(agent("--conf-dir", str(conf_dir), "--cni-path", str(plugin_dir),
                             "ready").stdout)
    assert state["ready"] is True and state["missing"] == []
    res = agent("--cni-path", str(plugin_dir), "cni", "version", "fake-b")
    assert json.loads(res.stdout)["supportedVersions"] == ["0.3.1", "0.4.0", "1.0.0"]
    res = agent("--cni-path", str(plugin_dir), "cni", "version", "absent")
    assert res.returncode == 1
    assert "failed to find plugin 'absent'" in json.loads(res.stdout)["error"]


# -- workload and probe (loopback only) ----------------------------------------------------

def _serving(srv: http.server.HTTPServer) -> Iterator[str]:
    """Serve in a thread; its base URL while the test runs."""
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server() -> Iterator[str]:
    """The workload server on 127.0.0.1 and a free port."""
    yield from _serving(workload.make_server(
        workload.Identity("pod-a", "node-1", "web", 0, "10.9.0.7"), "127.0.0.1"))


def test_workload_endpoints(server: str) -> None:
    with urllib.request.urlopen(server + "/", timeout=5) as resp:
        body = json.load(resp)
    port = int(server.rsplit(":", 1)[1])
    assert {k: body[k] for k in ("pod", "node", "ip", "container", "port")} == {
        "pod": "pod-a", "node": "node-1", "ip": "10.9.0.7", "container": "web", "port": port}
    with urllib.request.urlopen(server + "/bytes?n=200000", timeout=5) as resp:
        assert len(resp.read()) == 200000
    with urllib.request.urlopen(server + "/healthz", timeout=5) as resp:
        assert resp.status == 200


def test_probe_reports_samples_and_median(server: str) -> None:
    res = probe.probe(server + "/", count=3, timeout=2)
    assert res["ok"] is True and res["status"] == 200 and res["error"] == ""
    assert res["body"]["pod"] == "pod-a"
    assert len(res["samples"]) == 3 and res["latency_ms"] > 0
    res = probe.probe(server + "/missing", count=1, timeout=2)
    assert res["ok"] is False and res["status"] == 404 and "404" in res["error"]
    res = probe.probe(server + "/bytes?n=x", count=1, timeout=2)
    assert res["status"] == 400
    closed = probe.probe("http://127.0.0.1:9/", count=2, timeout=1)
    assert closed["ok"] is False and closed["latency_ms"] is None
    assert "Connection refused" in closed["error"] and closed["failures"] == 2


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET after SLOW seconds with the path it was asked and a header it got;
    counts the most requests it held at once."""

    lock = threading.Lock()
    inflight = 0
    most = 0

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.inflight += 1
            cls.most = max(cls.most, cls.inflight)
        try:
            time.sleep(SLOW)
        finally:
            with cls.lock:
                cls.inflight -= 1
        body = json.dumps({"path": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


SLOW = 0.3


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A threaded http.server on 127.0.0.1 that takes SLOW seconds per request."""
    yield from _serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler))


def test_probe_many_answers_in_order_concurrently(slow_server: str) -> None:
    targets = [ProbeTarget(url=f"{slow_server}/{i}", count=2, timeout=2) for i in range(6)]
    targets.insert(3, ProbeTarget(url="http://127.0.0.1:9/", count=2, timeout=1))
    targets.append(ProbeTarget(url=f"{slow_server}/h", count=1, timeout=2,
                               headers={"Host": "web.example"}))
    SlowHandler.most = 0
    replies = probe.probe_many(targets)
    concurrent = SlowHandler.most
    assert [r["url"] for r in replies] == [t["url"] for t in targets]
    assert [r["ok"] for r in replies] == [True] * 3 + [False] + [True] * 4
    assert [r["body"]["path"] for r in replies if r["ok"]] == [
        "/0", "/1", "/2", "/3", "/4", "/5", "/h"]
    assert replies[-1]["body"]["host"] == "web.example"
    refused = replies[3]
    assert refused["failures"] == 2 and "Connection refused" in refused["error"]
    assert all(r["latency_ms"] >= SLOW * 1000 for r in replies if r["ok"])
    # the server held several of the targets' requests at once (each sleeps SLOW s); with one
    # worker it never holds more than one
    assert concurrent >= 3, concurrent
    SlowHandler.most = 0
    one_at_a_time = probe.probe_many(targets[:3], workers=1)
    assert [r["ok"] for r in one_at_a_time] == [True] * 3 and SlowHandler.most == 1
    assert probe.probe_many([]) == []


def test_batch_limit_counts_waves_of_the_slowest_target() -> None:
    fast, slow = (ProbeTarget(url="http://x/", count=c, timeout=t) for c, t in ((1, 1), (3, 3)))
    assert probe.batch_limit([fast] * 3 + [slow], workers=2) == 2 * 3 * (3 + 1)
    assert probe.batch_limit([fast], workers=16) == 1 * (1 + 1)
    assert probe.batch_limit([]) == 0


def test_parse_targets_fills_defaults_and_rejects_bad_ones() -> None:
    got = probe.parse_targets('[{"url": "http://a/"}, {"url": "http://b/", "count": 1, '
                              '"timeout": 0.5, "headers": {"Host": "h"}}]')
    assert got == [{"url": "http://a/", "count": 3, "timeout": 3.0, "headers": {}},
                   {"url": "http://b/", "count": 1, "timeout": 0.5, "headers": {"Host": "h"}}]
    for bad, why in (('{"url": "http://a/"}', "JSON list"), ('[{"count": 1}]', "url"),
                     ('[{"url": "u", "count": true}]', "count"),
                     ('[{"url": "u", "timeout": -1}]', "timeout"),
                     ('[{"url": "u", "headers": {"a": 1}}]', "headers")):
        with pytest.raises(ValueError, match=why):
            probe.parse_targets(bad)


def test_probe_module_batch_cli_from_argument_and_stdin(slow_server: str) -> None:
    batch = json.dumps([{"url": f"{slow_server}/x", "count": 1, "timeout": 2},
                        {"url": "http://127.0.0.1:9/", "count": 1, "timeout": 1}])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args, stdin in ((["--batch", batch], None), (["--batch", "-"], batch)):
        res = subprocess.run([sys.executable, "-m", "testbed_node.probe", *args], input=stdin,
                             capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        assert [r["ok"] for r in json.loads(res.stdout)] == [True, False]
    for args in (["--batch", "[{}]"], [], [f"{slow_server}/", "--batch", batch]):
        res = subprocess.run([sys.executable, "-m", "testbed_node.probe", *args],
                             capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 2 and res.stdout == "", (args, res)
