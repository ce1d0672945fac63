"""A seeded mutation fuzz of the scenario loader and the CLI: one-line refusals, never a crash."""

from __future__ import annotations

import contextlib
import copy
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from testbed import errors
from testbed.cli import cli
from testbed.errors import UserError
from testbed.paths import SCENARIOS_DIR
from testbed.run.options import servable
from testbed.scenario import Scenario, load, revalidate

SHIPPED = sorted(SCENARIOS_DIR.glob("*.yaml"))
PER_SCENARIO = 620  # mutations of each shipped file (five files: 3100 in all)
CLI_MUTATIONS = 50

WEIRD: list[Any] = [
    None, True, False, 0, -1, -(2**63) - 1, 2**63, 2**64, 10**30, 1.5, -0.0, float("inf"),
    "", " ", "x" * 5000, "[/x]", "[bold]red[/bold]", "[/]", "fd00::/64", "::1", "10.0.0.0/8",
    "172.30.0.0/16", "999.1.1.1", "10.96.0.1/16", "😀", "a\tb", "%s%n", "../../etc/passwd",
    [], {}, [1, 2], {"a": 1}, {"[/x]": "[/x]"}, ["[/x]"], "TCP", "UDP", "NodePort", 8080,
    30080, 65536, "docker.io/flannel/flannel:v0.28.1", "NOT A REF",
]
SYNTAX = [":", "[", "]", "{", "}", "&a", "*a", "*nope", "!!python/object:os.system", "%YAML 9",
          "\t", "'", '"', "- ", "? ", "---\n", "...\n", "|", ">", "#", "\\", "@", "`"]


class Reached(errors.TestbedError):
    """The command got past validation to the container engine (stubbed out here)."""

    exit_code = 0


def _no_docker() -> None:
    raise Reached("validation passed; the provider is stubbed out in tests")


@pytest.fixture(autouse=True)
def _stub_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach Docker: the provider raises instead."""
    for module in ("testbed.cli.base", "testbed.cli.images", "testbed.cli.cluster",
                   "testbed.cli.run"):
        monkeypatch.setattr(f"{module}._provider", _no_docker)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _mutate_data(rng: random.Random, doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _get(doc, path[:-1]), path[-1]
        op = rng.randrange(6)
        if op == 0:
            parent[key] = rng.choice(WEIRD)
        elif op == 1:
            del parent[key]
        elif op == 2 and isinstance(parent, dict):
            parent[rng.choice(["bogus", "[/x]", "Nodes", "podCidr", "seed", 7])] = \
                rng.choice(WEIRD)
        elif op == 3 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif op == 4 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
            parent[key] = rng.choice([-parent[key] - 1, parent[key] * 10**rng.randint(1, 25),
                                      parent[key] + 1])
        else:
            parent[key] = rng.choice(WEIRD)
    return doc


def _mutate_text(rng: random.Random, raw: bytes) -> bytes:
    op = rng.randrange(7)
    pos = rng.randrange(len(raw) + 1)
    if op == 0:
        return raw[:pos]
    if op == 1:
        return raw[:pos] + rng.choice(SYNTAX).encode() + raw[pos:]
    if op == 2:
        flipped = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(flipped))
            flipped[i] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if op == 3:
        return raw.decode().encode(rng.choice(["utf-16", "utf-16-le", "utf-32"]))
    if op == 4:
        return raw[:pos] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"]) + raw[pos:]
    if op == 5:
        return raw[:pos] + b"\n" + raw[pos:] + b"\n" + raw[:pos]
    levels = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
                     for i in range(1, rng.randint(2, 12)))
    return b"l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + levels.encode() + raw


@dataclass
class Tally:
    """What the fuzz saw."""

    tried: int = 0
    refused: int = 0
    accepted: int = 0
    tracebacks: int = 0
    without_allowed: int = 0
    crashes: list[str] = field(default_factory=list)


def _mutations(rng: random.Random, tmp: Path, per_file: int) -> Iterator[Path]:
    for shipped in SHIPPED:
        raw = shipped.read_bytes()
        (tmp / "[").mkdir(exist_ok=True)
        doc = yaml.safe_load(raw)
        for i in range(per_file):
            target = tmp / "[" / f"x]{shipped.stem}-{i}.yaml"  # the path holds "[/x]"
            if rng.random() < 0.6:
                target.write_text(yaml.safe_dump(_mutate_data(rng, doc), allow_unicode=True))
            else:
                target.write_bytes(_mutate_text(rng, raw))
            yield target


def _one_file(tally: Tally, path: Path) -> None:
    tally.tried += 1
    try:
        spec = load(path)
        revalidate(spec, path)
        spec.pods()
        spec.digest()
        with contextlib.suppress(UserError):  # a run may refuse it; that is one line too
            servable(spec, str(path))
        tally.accepted += 1
    except UserError as e:
        msg = str(e)
        if str(path) not in msg or "\n" in msg:
            tally.crashes.append(f"{path.name}: not one line naming the file: {msg[:200]}")
        if "allowed: " not in msg:
            tally.without_allowed += 1
        tally.refused += 1
    except Exception as e:  # anything else is what the fuzz hunts for
        tally.tracebacks += 1
        tally.crashes.append(f"{path.name}: {type(e).__name__}: {str(e)[:200]}")


def test_loader_fuzz_of_every_shipped_scenario(tmp_path: Path) -> None:
    rng = random.Random(1234)
    tally = Tally()
    for path in _mutations(rng, tmp_path, PER_SCENARIO):
        _one_file(tally, path)
        path.unlink()
    print(f"\nloader fuzz: {tally.tried} mutations, {tally.refused} refused (exit 2), "
          f"{tally.accepted} accepted, {tally.tracebacks} tracebacks, "
          f"{tally.without_allowed} refusals without 'allowed'")
    assert tally.tracebacks == 0 and not tally.crashes, tally.crashes[:10]
    assert tally.tried >= 3000 and tally.refused > 0 and tally.accepted > 0
    assert tally.without_allowed == 0, "every refusal shows what is allowed"


def _cli(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    res = CliRunner().invoke(cli, args, env=env)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"{args}: {type(res.exception).__name__}: {res.exception}")
    return res.exit_code, res.stderr + res.stdout


def test_cli_fuzz_exit_2_or_0_and_one_line(tmp_path: Path) -> None:
    rng = random.Random(1234)
    counts = {"tried": 0, "exit 2": 0, "exit 0": 0, "tracebacks": 0}
    db = tmp_path / "db.sqlite"
    for path in _mutations(rng, tmp_path, CLI_MUTATIONS // len(SHIPPED) + 1):
        cmd = rng.choice([["up", str(path), "--name", "tbt-fuzz"],
                          ["run", "flannel", "--scenario", str(path), "--db", str(db),
                           "--out", str(tmp_path / "runs")],
                          ["up", str(path), "--nodes", str(rng.choice([1, 2, 16]))]])
        code, out = _cli(cmd)
        counts["tried"] += 1
        counts["tracebacks"] += "Traceback" in out
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert code in (0, 2), (cmd, out)
        assert len(lines) == 1 and lines[0].startswith("ERROR: "), (cmd, out)
        counts[f"exit {code}"] += 1
    print(f"\ncli fuzz: {counts}")
    assert counts["tracebacks"] == 0 and counts["exit 2"] > 0 and counts["tried"] >= CLI_MUTATIONS


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(UserError) as err:
        load(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_an_alias_bomb_is_refused_by_the_expansion_limit(tmp_path: Path) -> None:
    levels = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
                     for i in range(1, 10))
    path = _write(tmp_path, "bomb.yaml", "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + levels)
    assert "alias bomb" in _refusal(path)


def test_too_many_aliases_are_refused_while_composing(tmp_path: Path) -> None:
    path = _write(tmp_path, "aliases.yaml", "a: &a 1\nb: [" + ", ".join(["*a"] * 5000) + "]\n")
    assert "aliases" in _refusal(path)


def test_many_values_and_big_files_are_refused_before_constructing(tmp_path: Path) -> None:
    many = _write(tmp_path, "many.yaml", "a: [" + "1, " * 200_000 + "1]\n")
    assert "values" in _refusal(many)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    assert "bytes" in _refusal(big)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested deeper" in _refusal(path)


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "scenario.yaml"
    os.mkfifo(fifo)
    assert "FIFO" in _refusal(fifo)  # opening it would block: reaching here means it was not
    code, out = _cli(["up", str(fifo)])
    assert code == 2 and "FIFO" in out


def test_a_directory_utf16_and_invalid_utf8_are_one_line_refusals(tmp_path: Path) -> None:
    assert "directory" in _refusal(tmp_path)
    utf16 = tmp_path / "u16.yaml"
    utf16.write_bytes("nodes: 2\n".encode("utf-16"))
    assert "UTF-16" in _refusal(utf16)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    assert "not UTF-8" in _refusal(bad)


def test_markup_in_names_and_paths_prints_verbatim(tmp_path: Path) -> None:
    (tmp_path / "[bold]x[").mkdir()
    path = _write(tmp_path, "[bold]x[/x].yaml", "name: '[/x]'\n")
    assert "[/x]" in str(path)
    code, out = _cli(["up", str(path)])
    assert code == 2 and str(path) in out and "'[/x]'" in out
    code, out = _cli(["report", "[/x]", "--db", str(tmp_path / "db.sqlite")])
    assert code == 2 and "'[/x]'" in out


@pytest.mark.parametrize(("text", "needle"), [
    ("serviceCIDR: 10.244.0.0/16\ncni: {podCIDR: 10.244.0.0/24}\n", "overlaps the pod CIDR"),
    ("cni: {podCIDR: 172.30.0.0/20}\n", "overlaps the node networks"),
    ("serviceCIDR: 10.244.0.0/16\n", "the CNI default"),
    ("serviceCIDR: 172.30.5.0/24\n", "overlaps the node networks"),
    ("cni: {podCIDR: 'fd00::/64'}\n", "not an IPv4 network"),
    ("serviceCIDR: 10.96.0.1/16\n", "not an IPv4 network"),
    ("nodes: 8\ncni: {podCIDR: 10.244.0.0/22}\n", "too small for 8 nodes"),
    ("deployments: [{name: a}]\nservices: [{name: s, selector: {app: a}, ports: [{port: 80}, "
     "{port: 80}]}]\n", "duplicate port"),
    ("deployments: [{name: a}]\nservices:\n- {name: s, selector: {app: a}, ports: [{port: 80}],"
     " clusterIP: 10.96.0.9}\n- {name: t, selector: {app: a}, ports: [{port: 80}], "
     "clusterIP: 10.96.0.9}\n", "one clusterIP per service"),
    ("services: [{name: s, selector: {app: a}, ports: [{port: 80}], clusterIP: 'fd00::1'}]\n",
     "not an IPv4 address"),
    ("networkPolicies:\n- {name: p, podSelector: {}}\n- {name: p, podSelector: {}}\n",
     "name is used twice"),
    ("ingress: [{host: 'a..b', paths: [{service: s, port: 80}]}]\n", "ingress.0.host"),
    ("ingress: [{host: a.b, paths: [{path: '/x; return 200', service: s, port: 80}]}]\n",
     "ingress.0.paths.0.path"),
    ("cni: {images: {daemon: 'NOT A REF'}}\n", "not an image reference"),
    ("load: {seed: -1}\n", "load.seed"),
    ("load: {seed: 9223372036854775808}\n", "load.seed"),
    ("load: {paths: [nodeport, nodeport]}\n", "listed twice"),
])
def test_what_cannot_work_is_refused_by_the_loader(tmp_path: Path, text: str,
                                                   needle: str) -> None:
    msg = _refusal(_write(tmp_path, "s.yaml", text))
    assert needle in msg and "allowed" in msg, msg


@pytest.mark.parametrize(("args", "needle"), [
    (["compare", "flannel"], "at least two"),
    (["compare", "flannel", "flannel:vxlan"], "the same CNI"),
    (["compare", "flannel:host-gw", "calico", "--mtu", "1200"], "ignores a pod MTU"),
    (["compare", "flannel", "--mtu", "1460,1200"], "576 to 1450"),
    (["compare", "flannel", "--mtu", "1200,x"], "not a list of numbers"),
    (["compare", "flannel", "calico", "--trials", "0"], "1 to 20"),
    (["run", "flannel", "--trials", "21"], "1 to 20"),
    (["up", "default", "--nodes", "1"], "placement node 2"),
    (["up", "--image", "daemon=NOT A REF"], "not an image reference"),
    (["up", "--image", "nosuchrole=docker.io/x/y:1"], "unknown image role"),
    (["run", "flannel", "--seed", "-1"], "--seed -1"),
    (["run", "flannel", "--seed", str(2**63)], "out of range"),
    (["run", "flannel", "--scenario", "bench"], "client pods"),
    (["report", "--last", str(10**30)], "--last"),
    (["up", ""], "not a file name"),
    (["up", "--cni", ""], "unknown CNI ''"),
    (["images", "build", "--cni", ""], "unknown CNI ''"),
])
def test_what_cannot_work_is_refused_before_anything_starts(tmp_path: Path, args: list[str],
                                                            needle: str) -> None:
    extra = ["--db", str(tmp_path / "db.sqlite")] if args[0] in ("run", "compare", "report") \
        else []
    if args[0] in ("run", "compare"):
        extra += ["--out", str(tmp_path / "runs")]
    code, out = _cli([*args, *extra])
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in out, out


@pytest.mark.parametrize("args", [["up", "--name", ""], ["up", "--name", "  "], ["down", ""],
                                  ["down", " "], ["status", ""], ["check", ""], ["check", " "]])
def test_blank_cluster_names_are_refused_not_read_as_default_or_all(args: list[str]) -> None:
    code, out = _cli(args)
    assert code == 2 and "invalid cluster name" in out, out


def test_a_bad_db_or_data_folder_is_bad_input(tmp_path: Path) -> None:
    not_db = _write(tmp_path, "notes.txt", "hello\n")
    for db in (tmp_path, not_db, Path("/proc/testbed/db.sqlite")):
        code, out = _cli(["report", "--last", "1", "--db", str(db)])
        assert code == 2 and str(db) in out and len(out.strip().splitlines()) == 1, out
    code, out = _cli(["report", "--last", "1"], env={"TESTBED_DATA": str(not_db),
                                                     "TESTBED_DB": ""})
    assert code == 2 and "TESTBED_DATA" in out, out
    code, out = _cli(["report", "--last", "1"], env={"TESTBED_DB": str(tmp_path)})
    assert code == 2 and str(tmp_path) in out and len(out.strip().splitlines()) == 1, out


def test_refusals_through_the_real_entry_point_have_no_traceback(tmp_path: Path) -> None:
    """`python -m testbed run ... --out /proc/...` always stops before Docker."""
    utf16 = tmp_path / "u16.yaml"
    utf16.write_bytes("nodes: 2\n".encode("utf-16"))
    for scenario in (str(utf16), str(tmp_path), "[/x]",
                     str(_write(tmp_path, "m.yaml", "name: '[bold]x[/x]'\n"))):
        res = subprocess.run([sys.executable, "-m", "testbed", "run", "flannel", "--scenario",
                              scenario, "--out", "/proc/testbed-never"], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and scenario in res.stderr, res.stderr


def test_pod_cidr_room_follows_the_cnis_block_size(tmp_path: Path) -> None:
    text = "nodes: 3\ncni: {{name: {}, podCIDR: 10.10.0.0/24}}\n"
    assert load(_write(tmp_path, "calico.yaml", text.format("calico"))).nodes == 3
    assert "too small" in _refusal(_write(tmp_path, "flannel.yaml", text.format("flannel")))


def test_shipped_scenarios_are_accepted() -> None:
    assert all(isinstance(load(p), Scenario) for p in SHIPPED)


OPTION_VALUES = ["", " ", "[/x]", "[bold]", "-1", "0", "1", str(2**63), "nan", "inf", "1e400",
                 "flannel", "calico:bgp", "weave@v9.9.9", "flannel@", ":", "a=b", "daemon=", "=x",
                 "x" * 3000, "/proc/x", "/tmp", "/etc/passwd", "\x00", "é", "bench", "tbt-a"]
COMMANDS: dict[str, list[str]] = {
    "up": ["--cni", "--nodes", "--name", "--build", "--image"],
    "run": ["--scenario", "--duration", "--users", "--spawn-rate", "--seed", "--web-port",
            "--out", "--db", "--image", "--build"],
    "compare": ["--scenario", "--duration", "--users", "--seed", "--out", "--db", "--trials",
                "--mtu"],
    "report": ["--last", "--out", "--db"], "status": [], "check": ["--junit"], "down": [],
    "images build": ["--cni", "--build"], "images load": [],
}


def test_cli_option_fuzz_never_crashes(tmp_path: Path) -> None:
    """Random values for every command's arguments and options (the provider is stubbed)."""
    rng = random.Random(1234)
    counts = {"tried": 0, "exit 0": 0, "exit 2": 0}
    for _ in range(300):
        cmd = rng.choice(list(COMMANDS))
        args = cmd.split()
        if cmd == "run" or (cmd != "compare" and rng.random() < 0.5):
            args.append(rng.choice(OPTION_VALUES))
        if cmd == "compare":
            args += [rng.choice(OPTION_VALUES) for _ in range(rng.randint(1, 3))]
        for _ in range(rng.randint(0, 3) if COMMANDS[cmd] else 0):
            args += [rng.choice(COMMANDS[cmd]), rng.choice(OPTION_VALUES)]
        if cmd in ("run", "compare", "report"):
            args += ["--db", str(tmp_path / "db.sqlite"), "--out", str(tmp_path / "out")]
        code, out = _cli(args)  # raises on any exception but SystemExit
        counts["tried"] += 1
        assert code in (0, 2) and "Traceback" not in out, (args, out)
        counts[f"exit {code}"] += 1
    print(f"\ncli option fuzz: {counts}")
    assert counts["exit 2"] > 0
