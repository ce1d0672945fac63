"""The cluster handle without Docker: rollback, retried removal, the marker, attach, timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from testbed import cni as cnis
from testbed.cluster import handle as handle_mod
from testbed.cluster import model
from testbed.cluster.handle import Cluster
from testbed.errors import ProviderError, StepError, UserError
from testbed.lifecycle import steps, wait
from testbed.lifecycle.pipeline import Step
from testbed.provider.base import ContainerInfo
from testbed.scenario import load


class FakeProvider:
    """Just the objects the handle reads and removes: names by kind, per cluster."""

    def __init__(self, stubborn: int = 0) -> None:
        self.objects: dict[str, dict[str, set[str]]] = {}
        self.deletes = 0
        self.stubborn = stubborn  # this many removals fail first (a container joined)

    def add(self, cluster: str, kind: str, name: str) -> None:
        self.objects.setdefault(cluster, {"container": set(), "network": set(),
                                          "volume": set()})[kind].add(name)

    def create_volume(self, name: str, cluster: str, role: str) -> str:
        self.add(cluster, "volume", name)
        return name

    def clusters(self) -> list[str]:
        return sorted(c for c, kinds in self.objects.items() if any(kinds.values()))

    def containers(self, cluster: str | None = None, role: str | None = None
                   ) -> list[ContainerInfo]:
        names = self.objects.get(cluster or "", {}).get("container", set())
        return [ContainerInfo(n, n, "node", "running", "img", {}, None) for n in sorted(names)]

    def networks(self, cluster: str) -> list[str]:
        return sorted(self.objects.get(cluster, {}).get("network", set()))

    def volumes(self, cluster: str, role: str | None = None) -> list[str]:
        vols = self.objects.get(cluster, {}).get("volume", set())
        return sorted(v for v in vols if role is None or v.endswith("-complete"))

    def delete_cluster(self, cluster: str) -> None:
        self.deletes += 1
        if self.stubborn:
            self.stubborn -= 1
            raise ProviderError("network has active endpoints")
        self.objects.pop(cluster, None)


def _steps(provider: FakeProvider, fail: BaseException | None) -> Any:
    def make(ctx: Any) -> list[Step[Any]]:
        def create(c: Any) -> None:
            provider.add(c.name, "network", f"{c.name}-net")
            provider.add(c.name, "container", f"{c.name}-node-1")

        def broken(c: Any) -> None:
            if fail is not None:
                raise fail

        return [Step("Creating", create), Step("Failing", broken)]
    return make


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    monkeypatch.setattr(steps, "prepare", lambda *a: None)
    return FakeProvider()


def _create(provider: FakeProvider, **kw: Any) -> Cluster:
    module, backend, _ = cnis.parse("flannel")
    return Cluster.create(provider, load(None), "tbt-h", module, backend, **kw)  # type: ignore[arg-type]


def test_a_finished_up_is_complete_and_leaving_the_block_removes_it(
        fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "steps", _steps(fake, None))
    with _create(fake) as c:
        assert c.complete and model.marker_name("tbt-h") in fake.volumes("tbt-h")
        assert c.ctx is not None
    assert fake.clusters() == []


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failure_or_ctrl_c_rolls_everything_back(
        failure: BaseException, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "steps", _steps(fake, failure))
    with pytest.raises(StepError if isinstance(failure, Exception) else KeyboardInterrupt):
        _create(fake)
    assert fake.clusters() == []


def test_retain_keeps_a_failed_cluster_incomplete(fake: FakeProvider,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "steps", _steps(fake, RuntimeError("boom")))
    with pytest.raises(StepError, match="Failing: RuntimeError: boom"):
        _create(fake, retain=True)
    assert fake.clusters() == ["tbt-h"]
    assert not Cluster.attach(fake, "tbt-h").complete  # type: ignore[arg-type]


def test_removal_is_retried_until_nothing_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    p = FakeProvider(stubborn=2)
    p.add("tbt-h", "network", "tbt-h-net")
    Cluster(p, "tbt-h").down()  # type: ignore[arg-type]
    assert p.clusters() == [] and p.deletes == 3
    q = FakeProvider(stubborn=5)
    q.add("tbt-h", "network", "tbt-h-net")
    with pytest.raises(ProviderError, match="retry `python -m testbed down tbt-h`"):
        Cluster(q, "tbt-h").down()  # type: ignore[arg-type]


def test_attach_finds_only_existing_clusters(fake: FakeProvider) -> None:
    with pytest.raises(UserError, match="no cluster named 'nope'"):
        Cluster.attach(fake, "nope")  # type: ignore[arg-type]
    fake.add("tbt-h", "network", "tbt-h-net")
    with Cluster.attach(fake, "tbt-h") as c:  # type: ignore[arg-type]
        assert c.keep
    assert fake.clusters() == ["tbt-h"], "attach keeps the cluster by default"


def test_down_selects_by_name_or_all_with_a_prefix(fake: FakeProvider) -> None:
    for name in ("tbt-a", "tbt-b", "other"):
        fake.add(name, "network", f"{name}-net")
    sel = handle_mod.select
    assert sel(fake, None, True, "tbt-") == ["tbt-a", "tbt-b"]  # type: ignore[arg-type]
    assert sel(fake, "other", False, "") == ["other"]  # type: ignore[arg-type]
    assert sel(fake, "gone", False, "") == []  # type: ignore[arg-type]
    for bad in (("x", True, ""), (None, False, "tbt-")):
        with pytest.raises(UserError):
            sel(fake, *bad)  # type: ignore[arg-type]


def test_one_timeout_policy_scales_every_named_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wait.SCALE_ENV, "2")
    scaled = wait.Timeouts.from_env()
    assert scaled.cni == 2 * wait.Timeouts().cni and scaled.edge == 2 * wait.Timeouts().edge
    monkeypatch.setenv(wait.SCALE_ENV, "fast")
    with pytest.raises(UserError, match="TESTBED_TIMEOUT_SCALE"):
        wait.Timeouts.from_env()


def test_an_exec_wait_polls_until_the_command_answers() -> None:
    calls: list[list[str]] = []

    class Answers:
        def exec(self, container: str, argv: list[str], **kw: Any) -> Any:
            calls.append([container, *argv])
            return type("R", (), {"exit_code": 0, "stdout": "404" if len(calls) > 2 else "502",
                                  "stderr": ""})()

        def logs(self, container: str, tail: int = 50) -> str:
            return "log line"

    info = ContainerInfo("c1", "tbt-ingress", "ingress", "running", "img", {}, None)
    wait.Exec(("curl", "x"), "the ingress", where="tbt-node-1", expect="404").wait(
        Answers(), info)  # type: ignore[arg-type]
    assert len(calls) == 3 and calls[0][:2] == ["tbt-node-1", "curl"]
