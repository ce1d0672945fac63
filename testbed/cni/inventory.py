"""`images list` and `images load`: what is present locally, source builds and upstream alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed import cni as cnis
from testbed.errors import UserError
from testbed.images.build import present, resolve
from testbed.images.catalog import ALL
from testbed.provider.docker import connect


def inventory() -> list[dict[str, Any]]:
    """Every image a cluster may use, with its local reference and whether it is present."""
    client = connect()
    rows: list[dict[str, Any]] = []
    for spec in ALL:
        tag = resolve(spec).tag
        rows.append({"name": spec.name, "kind": spec.role, "cni": None, "ref": tag,
                     "present": present(client, tag), "release": ""})
    for module in cnis.REGISTRY.values():
        release = module.default_release
        upstream = module.upstream_images(release)
        for role, spec in module.source_images(release, module.module).items():
            tag = resolve(spec).tag
            rows.append({"name": spec.name, "kind": "source", "cni": module.name, "ref": tag,
                         "present": present(client, tag), "release": release,
                         "upstream": upstream[role]})
        for role, ref in upstream.items():
            rows.append({"name": f"{module.name}-{role}", "kind": "upstream",
                         "cni": module.name, "ref": ref, "present": present(client, ref),
                         "release": release})
    return rows


def load(path: Path) -> list[str]:
    """Load a `docker save` tarball; returns the tags it brought."""
    if not path.is_file():
        raise UserError(f"{path} is not a file: give a tarball made by `docker save`")
    client = connect()
    with path.open("rb") as fh:
        try:
            loaded = client.images.load(fh.read())
        except Exception as e:
            raise UserError(f"{path} could not be loaded as a docker image archive: {e}") from e
    return [t for img in loaded for t in img.tags]
