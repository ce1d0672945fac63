"""Interrupts: Ctrl-C at a step of `up`, Ctrl-C again during the rollback, and a killed `up`
followed by `status`, `list` and `down`; afterwards nothing labelled with the cluster is left."""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import cluster_name, leftovers, run_cli

from testbed.lifecycle import interrupts
from testbed.lifecycle.wait import CANCELLED, until
from testbed.provider.docker import DockerProvider

# `light`: 2 nodes, services and the edge, so `up` has every kind of step (each `up` of it
# takes a few seconds here). Each case interrupts its own cluster.
SCENARIO = "light"
_numbers = itertools.count(1)


def _name() -> str:
    return cluster_name(f"cluster-{next(_numbers)}")


class Up:
    """`python -m testbed up` in a subprocess, its progress lines read as they come."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testbed", "up", SCENARIO, "--name", name,
             "--build", "source"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = 300) -> str:
        """Block until a progress line containing `needle` appears."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"`up` ended before {needle!r}:\n" + self.output)
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no {needle!r} within {timeout}s:\n" + self.output)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 300) -> int:
        """The exit code, once every line has been read."""
        code = self.proc.wait(timeout=timeout)
        while True:
            line = self._queue.get(timeout=30)
            if line is None:
                return code
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def up_process(provider: DockerProvider, built: dict[str, str]) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
        run_cli("down", up.name)


# Steps of `light` (a progress line each); not every step, to keep the suite short: one in
# each phase (network only, containers starting, pods, services, the edge).
INTERRUPT_AT = ["Creating network", "Starting etcd and 2 nodes", "Starting flannel daemons",
                "Deploying", "Programming services", "Starting the edge"]


@pytest.mark.docker
@pytest.mark.parametrize("step", INTERRUPT_AT)
def test_ctrl_c_at_a_step_rolls_back_everything(step: str, provider: DockerProvider,
                                                up_process: list[Up]) -> None:
    up = Up(_name())
    up_process.append(up)
    up.wait_for(f"• {step}")
    up.signal(signal.SIGINT)
    code = up.finish()
    assert code == 130, up.output
    assert "Rolling back" in up.output, up.output
    assert up.lines[-1].endswith("interrupted"), up.output
    assert leftovers(provider, up.name) == []


@pytest.mark.docker
@pytest.mark.parametrize("step", ["Starting etcd and 2 nodes", "Deploying"])
def test_ctrl_c_twice_during_the_rollback_still_removes_everything(
        step: str, provider: DockerProvider, up_process: list[Up]) -> None:
    up = Up(_name())
    up_process.append(up)
    up.wait_for(f"• {step}")
    up.signal(signal.SIGINT)
    up.wait_for("• Rolling back")
    for _ in range(2):
        if up.proc.poll() is None:
            up.signal(signal.SIGINT)
            time.sleep(0.05)
    code = up.finish()
    assert code == 130, up.output
    notes = [ln for ln in up.lines if "Ctrl-C is ignored" in ln]
    assert len(notes) == 1, up.output
    assert notes[0].endswith(f"finish with: python -m testbed down {up.name})"), notes
    assert any("✓ Rolling back" in ln for ln in up.lines), up.output
    assert leftovers(provider, up.name) == []


@pytest.mark.docker
@pytest.mark.parametrize("step", ["Creating network", "Starting flannel daemons"])
def test_a_killed_up_shows_incomplete_until_down(step: str, provider: DockerProvider,
                                                 up_process: list[Up]) -> None:
    up = Up(_name())
    up_process.append(up)
    up.wait_for(f"• {step}")
    time.sleep(0.3)  # let the step create something
    up.signal(signal.SIGKILL)
    up.finish()
    assert leftovers(provider, up.name) != [], "a killed `up` cannot clean up"
    listed = run_cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["name"] == up.name)
    assert row["state"] == "incomplete", row
    res = run_cli("status", up.name, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["state"] == "incomplete" and f"down {up.name}" in doc["hint"], doc
    table = run_cli("list")
    assert "incomplete" in table.stdout, table.stdout
    # `.ci/run`'s last resort (`down --all --prefix tbt-`) and `down NAME` are the same code.
    how = ["--all", "--prefix", up.name] if step == "Creating network" else [up.name]
    down = run_cli("down", *how)
    assert down.returncode == 0, down.stderr
    assert f"Deleting cluster {up.name}" in down.stderr
    assert leftovers(provider, up.name) == []


@pytest.mark.docker
@pytest.mark.parametrize("args", [["x", "--all"], ["--prefix", "tbt-"], ["x", "--prefix", "x"]])
def test_down_takes_a_name_or_all_with_a_prefix(args: list[str]) -> None:
    res = run_cli("down", *args)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.docker
def test_a_finished_up_is_ready(provider: DockerProvider, up_process: list[Up]) -> None:
    up = Up(_name())
    up_process.append(up)
    assert up.finish() == 0, up.output
    res = run_cli("status", up.name, "--json")
    assert json.loads(res.stdout)["state"] == "ready", res.stdout
    row = next(r for r in json.loads(run_cli("list", "--json").stdout)
               if r["name"] == up.name)
    assert row["state"] == "ready", row
    assert run_cli("down", up.name).returncode == 0
    assert leftovers(provider, up.name) == []


@pytest.fixture
def interactive() -> Iterator[None]:
    """SIGINT handled as in a terminal's Python (a job a shell starts in the background
    without job control inherits it ignored, and Python then leaves it ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_the_first_ctrl_c_interrupts_and_cancels_waits_later_ones_are_ignored(
        capfd: pytest.CaptureFixture[str], interactive: None) -> None:
    with interrupts.guard("tbt-unit"):
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        assert CANCELLED.is_set()
        with pytest.raises(Exception, match="cancelled while waiting"):
            until(lambda: False, 5, "nothing")
        for _ in range(3):  # the cleanup after it cannot be interrupted
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert not CANCELLED.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert capfd.readouterr().err.count("Ctrl-C is ignored") == 1


def test_a_shielded_block_ignores_ctrl_c(capfd: pytest.CaptureFixture[str],
                                         interactive: None) -> None:
    done = False
    with interrupts.shield("tbt-unit"):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        done = True
    assert done
    with pytest.raises(KeyboardInterrupt):  # outside, Ctrl-C interrupts again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert "finish with: python -m testbed down tbt-unit" in capfd.readouterr().err
