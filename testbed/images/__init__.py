"""Local image builds: a Debian rootfs base and role images, tagged by a hash of their inputs."""

from testbed.images.build import ensure, present, resolve
from testbed.images.catalog import ALL, ImageSpec, by_name, for_cni

__all__ = ["ALL", "ImageSpec", "by_name", "ensure", "for_cni", "present", "resolve"]
