"""`images list` and `images load`: what is present locally, reference and upstream alike."""

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
        rows.append({"name": spec.name, "kind": "reference" if spec.cni else spec.role,
                     "cni": spec.cni, "ref": tag, "present": present(client, tag),
                     "stands_in_for": spec.stands_in_for})
    for module in cnis.REGISTRY.values():
        for role, ref in module.upstream_images.items():
            rows.append({"name": f"{module.name}-{role}", "kind": "upstream",
                         "cni": module.name, "ref": ref, "present": present(client, ref),
                         "stands_in_for": None})
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
