"""The cluster handle: the one owner of creation, rollback and teardown of a named cluster."""

from __future__ import annotations

import time
from contextlib import ExitStack
from types import TracebackType

from testbed import console
from testbed.cluster import model
from testbed.cni import Cni
from testbed.constants import DEFAULT_CLUSTER, LABEL_CLUSTER
from testbed.errors import ProviderError, UserError
from testbed.lifecycle import interrupts, pipeline, steps
from testbed.lifecycle.context import UpContext
from testbed.lifecycle.wait import drain
from testbed.provider.base import Provider
from testbed.scenario import Scenario

ROLLBACK_ATTEMPTS = 3
SETTLE_S = 0.5


class Cluster:
    """A cluster by name. `with Cluster.create(...) as c:` brings it up through the kind-style
    steps (rolled back on any failure or Ctrl-C) and removes it on leaving the block, unless
    `keep`; `Cluster.attach` finds an existing one. Ctrl-C inside the block interrupts once:
    the teardown it leads to cannot be interrupted."""

    def __init__(self, provider: Provider, name: str, *, keep: bool = False) -> None:
        self.provider = provider
        self.name = name
        self.keep = keep
        self.ctx: UpContext | None = None
        self._owned = ExitStack()

    @classmethod
    def create(cls, provider: Provider, scenario: Scenario, name: str, cni: Cni, backend: str,
               *, retain: bool = False, keep: bool = False) -> Cluster:
        """A new cluster, up and complete; nothing is left behind if that fails."""
        handle = cls(provider, name, keep=keep)
        handle.up(scenario, cni, backend, retain=retain)
        return handle

    @classmethod
    def attach(cls, provider: Provider, name: str, *, keep: bool = True) -> Cluster:
        """An existing cluster (complete or not); by default leaving its block keeps it."""
        if name not in provider.clusters():
            known = ", ".join(provider.clusters()) or "none"
            raise UserError(f"no cluster named {name!r} (clusters: {known}); create one with "
                            "`python -m testbed up`")
        return cls(provider, name, keep=keep)

    def up(self, scenario: Scenario, cni: Cni, backend: str, *, retain: bool = False
           ) -> UpContext:
        """Run every step of `up`; on any failure (Ctrl-C included) remove whatever carries the
        cluster's label, unless `retain`, then re-raise. The cluster counts as complete only
        once its marker exists, the last thing created."""
        steps.prepare(self.provider, scenario, self.name, cni)
        ctx = UpContext(provider=self.provider, scenario=scenario, name=self.name, cni=cni,
                        backend=backend)
        with interrupts.guard(self.name):
            try:
                pipeline.run(steps.steps(ctx), ctx, ctx.timings)
                self.provider.create_volume(model.marker_name(self.name), self.name,
                                            model.MARKER_ROLE)
            except BaseException:
                if retain:
                    drain()
                    console.info(" ! --retain given: leaving what was created for inspection "
                                 f"(remove it with `python -m testbed down {self.name}`)")
                else:
                    with interrupts.shield(self.name), console.step("Rolling back"):
                        self._remove()
                raise
        self.ctx = ctx
        return ctx

    @property
    def complete(self) -> bool:
        """Whether `up` finished (a killed `up` leaves an incomplete cluster)."""
        return model.is_complete(self.provider, self.name)

    def leftovers(self) -> list[str]:
        """Every container, network and volume still labelled with this cluster."""
        return ([f"container {c.name}" for c in self.provider.containers(cluster=self.name)]
                + [f"network {n}" for n in self.provider.networks(self.name)]
                + [f"volume {v}" for v in self.provider.volumes(self.name)])

    def down(self) -> None:
        """Remove every container, network and volume labelled with this cluster; Ctrl-C is
        ignored until that is done."""
        with interrupts.shield(self.name):
            self._remove()

    def _remove(self) -> None:
        # Worker threads an interrupt left running may still be creating something (a node
        # joining a network): remove, wait for them, and remove again until nothing is left.
        # A killed `up`'s last requests may still be completing in the engine: an incomplete
        # cluster is looked at once more after a moment.
        settle = not model.is_complete(self.provider, self.name)
        error: Exception | None = None
        for _ in range(ROLLBACK_ATTEMPTS):
            try:
                self.provider.delete_cluster(self.name)
                error = None
            except Exception as e:
                error = e
            drain()
            left = self.leftovers()
            if not left and error is None and settle:
                time.sleep(SETTLE_S)
                left, settle = self.leftovers(), False
            if not left and error is None:
                return
        raise ProviderError(f"cannot remove {', '.join(left) or 'everything'} "
                            f"({LABEL_CLUSTER}={self.name}){f': {error}' if error else ''}; "
                            f"retry `python -m testbed down {self.name}`")

    def __enter__(self) -> Cluster:
        self._owned.enter_context(interrupts.guard(self.name))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if not self.keep:
                with console.step(f"Deleting cluster {self.name}"):
                    self.down()
        finally:
            self._owned.close()

    def __repr__(self) -> str:
        return f"Cluster({self.name!r})"


def teardown(provider: Provider, names: list[str]) -> None:
    """`down`: each named cluster through its handle."""
    for name in names:
        with console.step(f"Deleting cluster {name}"):
            Cluster(provider, name).down()


def select(provider: Provider, name: str | None, all_: bool, prefix: str) -> list[str]:
    """The clusters `down` removes: one by name (default `testbed`), or every one (whose
    name starts with `prefix`)."""
    if name and (all_ or prefix):
        raise UserError("give a cluster NAME, or --all [--prefix P], not both")
    if prefix and not all_:
        raise UserError("--prefix goes with --all: `python -m testbed down --all --prefix tbt-`")
    if all_:
        return [n for n in provider.clusters() if n.startswith(prefix)]
    name = name or DEFAULT_CLUSTER
    return [name] if name in provider.clusters() else []
