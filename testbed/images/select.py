"""Choose a CNI's build: upstream images when obtainable, else this project's reference build."""

from __future__ import annotations

import os
from dataclasses import dataclass

import docker
import docker.errors

from testbed.cni.base import Cni
from testbed.errors import UserError
from testbed.images.build import present, resolve
from testbed.images.catalog import by_name


@dataclass(frozen=True)
class Selection:
    """The build that will run, its image per role, and what to tell the user."""

    build: str
    images: dict[str, str]
    note: str


def _obtainable(client: docker.DockerClient, ref: str) -> bool:
    if present(client, ref):
        return True
    # Pulling is opt-in: this tool never reaches for a registry unless asked to.
    if os.environ.get("TESTBED_PULL") != "1":
        return False
    try:
        client.images.pull(ref)
    except docker.errors.APIError:
        return False
    return True


def check_overrides(cni: Cni, overrides: dict[str, str]) -> None:
    """Image overrides must name roles the CNI has."""
    unknown = set(overrides) - set(cni.upstream_images)
    if unknown:
        raise UserError(f"unknown image role(s) {', '.join(sorted(unknown))} for {cni.name}: "
                        f"roles are {', '.join(cni.upstream_images)}")


def select(client: docker.DockerClient, cni: Cni, build: str,
           overrides: dict[str, str] | None = None) -> Selection:
    """Resolve `--build auto|upstream|reference` to image references per role."""
    overrides = overrides or {}
    check_overrides(cni, overrides)
    upstream = {**cni.upstream_images, **overrides}
    if build in ("auto", "upstream"):
        missing = [ref for ref in upstream.values() if not _obtainable(client, ref)]
        if not missing:
            return Selection("upstream", upstream, f"{cni.name}: upstream build")
        if build == "upstream":
            raise UserError(
                f"upstream image {missing[0]} is not available locally and cannot be pulled: "
                "load it with `python -m testbed images load FILE.tar` (or set TESTBED_PULL=1 "
                "where a registry answers), or use --build reference")
    reference = {role: resolve(by_name(name)).tag for role, name in cni.reference_images.items()}
    note = (f"{cni.name}: using the REFERENCE build (this project's drop-in, built from Debian "
            "packages), not the upstream product")
    if build == "auto":
        note += f"; upstream images not present locally ({', '.join(upstream.values())})"
    return Selection("reference", reference, note)
