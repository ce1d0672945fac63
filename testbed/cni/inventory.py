"""`images list` and `images load`: what is present locally, source builds and upstream alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed import cni as cnis
from testbed.errors import UserError
from testbed.images.build import resolve
from testbed.images.catalog import ALL
from testbed.provider.base import ImageStore


def inventory(store: ImageStore) -> list[dict[str, Any]]:
    """Every image a cluster may use, with its local reference and whether it is present."""
    rows: list[dict[str, Any]] = []
    for spec in ALL:
        tag = resolve(spec).tag
        rows.append({"name": spec.name, "kind": spec.role, "cni": None, "ref": tag,
                     "present": store.exists(tag), "release": ""})
    for module in cnis.REGISTRY.values():
        release = module.default_release
        upstream = module.upstream_images(release)
        for role, spec in module.source_images(release, module.module).items():
            tag = resolve(spec).tag
            rows.append({"name": spec.name, "kind": "source", "cni": module.name, "ref": tag,
                         "present": store.exists(tag), "release": release,
                         "upstream": upstream[role]})
        for role, ref in upstream.items():
            rows.append({"name": f"{module.name}-{role}", "kind": "upstream",
                         "cni": module.name, "ref": ref, "present": store.exists(ref),
                         "release": release})
    return rows


def load(store: ImageStore, path: Path) -> list[str]:
    """Load a `docker save` tarball; returns the tags it brought."""
    if not path.is_file():
        raise UserError(f"{path} is not a file: give a tarball made by `docker save`")
    return store.load(path.read_bytes(), str(path))
