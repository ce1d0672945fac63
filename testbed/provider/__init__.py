"""Container-engine providers behind one small interface."""

from testbed.provider.base import ContainerInfo, ContainerSpec, ExecResult, Provider
from testbed.provider.docker import DockerProvider, connect

__all__ = ["ContainerInfo", "ContainerSpec", "DockerProvider", "ExecResult", "Provider",
           "connect"]
