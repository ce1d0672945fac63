"""Choose a CNI's build: upstream's published images when obtainable, else built from source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from testbed.cni.base import Cni
from testbed.errors import UserError
from testbed.images.build import resolve
from testbed.images.catalog import CORE, ImageSpec
from testbed.provider.base import ImageStore


@dataclass(frozen=True)
class Selection:
    """The build that will run, its image per role, and what to tell the user."""

    build: str
    images: dict[str, str]
    note: str
    release: str = ""
    module: str = ""
    # The source-built image specs per role (empty for the upstream build).
    specs: dict[str, ImageSpec] = field(default_factory=dict)


def _obtainable(store: ImageStore, ref: str) -> bool:
    if store.exists(ref):
        return True
    # Pulling is opt-in: this tool never reaches for a registry unless asked to.
    return os.environ.get("TESTBED_PULL") == "1" and store.pull(ref)


def check_overrides(cni: Cni, overrides: dict[str, str]) -> None:
    """Image overrides must name roles the CNI has."""
    roles = cni.upstream_images(cni.default_release)
    unknown = set(overrides) - set(roles)
    if unknown:
        raise UserError(f"unknown image role(s) {', '.join(sorted(unknown))} for {cni.name}: "
                        f"roles are {', '.join(roles)}")


def select(store: ImageStore, cni: Cni, build: str, release: str = "",
           module: str = "", overrides: dict[str, str] | None = None) -> Selection:
    """Resolve `--build auto|upstream|source` to image references per role."""
    overrides = overrides or {}
    check_overrides(cni, overrides)
    release = release or cni.default_release
    module = module or cni.module
    upstream = {**cni.upstream_images(release), **overrides}
    if build in ("auto", "upstream") and module == cni.module:
        missing = [ref for ref in upstream.values() if not _obtainable(store, ref)]
        if not missing:
            return Selection("upstream", upstream, f"{cni.name} {release}: upstream images",
                             release, module)
        if build == "upstream":
            raise UserError(
                f"upstream image {missing[0]} is not available locally and cannot be pulled: "
                "load it with `python -m testbed images load FILE.tar` (or set TESTBED_PULL=1 "
                "where a registry answers), or use --build source")
    elif build == "upstream":
        raise UserError(f"--build upstream runs the published images of {cni.module}; a fork "
                        f"({module}) can only be built from source: use --build source")
    specs = cni.source_images(release, module)
    images = {role: resolve(spec).tag for role, spec in specs.items()} | overrides
    note = f"{cni.name} {release}: built here from source ({module}@{release})"
    if build == "auto":
        note += "; upstream images not present locally"
    return Selection("source", images, note, release, module, specs)


def source_specs(values: tuple[str, ...] = ()) -> tuple[ImageSpec, ...]:
    """The core images plus the source builds of each `NAME[@VERSION]` (all CNIs at their
    default releases when none is given), without duplicates."""
    from testbed import cni as cnis

    chosen = [cnis.parse(v) for v in values] or [
        (c, c.default_backend, "") for c in cnis.REGISTRY.values()]
    specs: list[ImageSpec] = [*CORE]
    for module, _, version in chosen:
        specs += module.source_images(version or module.default_release, module.module).values()
    return tuple(dict.fromkeys(specs))
