"""testbed: a Docker-based multi-node CNI emulation and load testbed."""

__version__ = "0.1.0"
