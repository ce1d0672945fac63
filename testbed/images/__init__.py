"""Local image builds: a Debian rootfs base, role images, and CNI images built from source."""

from testbed.images.build import ensure, resolve
from testbed.images.catalog import ALL, CORE, ImageSpec, by_name

__all__ = ["ALL", "CORE", "ImageSpec", "by_name", "ensure", "resolve"]
