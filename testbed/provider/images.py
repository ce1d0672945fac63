"""Docker's image store: build, import, pull, load and inspect images by reference."""

from __future__ import annotations

from collections.abc import Callable

import docker
import docker.errors

from testbed.errors import ProviderError, UserError


class DockerImages:
    """The image operations the builder and the run records need, on the Docker SDK."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def exists(self, ref: str) -> bool:
        """Whether an image with this reference is present locally."""
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as e:  # e.g. a reference the engine cannot parse
            if e.status_code in (400, 404):
                return False
            raise ProviderError(f"cannot inspect image {ref}: {e.explanation}") from e
        return True

    def pull(self, ref: str) -> bool:
        """Pull from a registry; False when none answers (there is none on this machine)."""
        try:
            self.client.images.pull(ref)
        except docker.errors.APIError:
            return False
        return True

    def image_id(self, ref: str) -> str | None:
        """The image's content id (sha256:...), or None when it is gone."""
        try:
            return str(self.client.images.get(ref).id)
        except docker.errors.APIError:
            return None

    def labels(self, ref: str) -> dict[str, str] | None:
        """The image's labels, or None when it is gone."""
        try:
            return dict(self.client.images.get(ref).labels or {})
        except docker.errors.APIError:
            return None

    def build(self, context: str, tag: str, args: dict[str, str], labels: dict[str, str],
              on_step: Callable[[str], None]) -> None:
        """`docker build` of a context folder; each `Step N/M` line goes to on_step."""
        log: list[str] = []
        try:
            for chunk in self.client.api.build(path=context, tag=tag, buildargs=args,
                                               labels=labels, rm=True, forcerm=True,
                                               pull=False, decode=True):
                if "error" in chunk:
                    raise ProviderError(f"docker build {tag} failed: {chunk['error'].strip()}\n"
                                        + "\n".join(log[-15:]))
                text = str(chunk.get("stream", "")).rstrip()
                if text:
                    log.append(text)
                    if text.startswith("Step "):
                        on_step(text)
        except docker.errors.APIError as e:
            raise ProviderError(f"docker build {tag} failed: {e.explanation or e}") from e

    def import_rootfs(self, tarball: str, tag: str, changes: list[str]) -> None:
        """`docker import` a root filesystem tarball as `tag` with Dockerfile-style changes."""
        repo, _, version = tag.partition(":")
        try:
            self.client.api.import_image_from_file(tarball, repository=repo,
                                                   tag=version or "latest", changes=changes)
        except docker.errors.APIError as e:
            raise ProviderError(f"docker import {tag} failed: {e.explanation or e}") from e

    def remove(self, ref: str) -> None:
        """Remove a local image (the benchmarks' cold builds); absent is fine."""
        try:
            self.client.images.remove(ref, force=True)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as e:
            raise ProviderError(f"cannot remove image {ref}: {e.explanation}") from e

    def load(self, data: bytes, source: str) -> list[str]:
        """Load a `docker save` archive; the tags it brought."""
        try:
            loaded = self.client.images.load(data)
        except docker.errors.APIError as e:
            raise UserError(f"{source} could not be loaded as a docker image archive: "
                            f"{e.explanation or e}") from e
        return [t for img in loaded for t in img.tags]
