"""Container-engine providers behind one small interface."""

from testbed.provider.base import (
    ContainerInfo,
    ContainerSpec,
    ExecResult,
    ImageStore,
    Provider,
    Usage,
)
from testbed.provider.docker import DockerProvider
from testbed.provider.dockerapi import connect

__all__ = ["ContainerInfo", "ContainerSpec", "DockerProvider", "ExecResult", "ImageStore",
           "Provider", "Usage", "connect"]
