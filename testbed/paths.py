"""Where the checkout's assets and the per-user cache and data live."""

from __future__ import annotations

import os
from pathlib import Path

from testbed.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
SCENARIOS_DIR = REPO_ROOT / "scenarios"
# The packages shipped into node images: the node agent and the contract it shares with the host.
NODE_PACKAGES = ("testbed_node", "testbed_contract")
PYPROJECT = REPO_ROOT / "pyproject.toml"


def cache_dir() -> Path:
    """Per-user cache (downloaded wheels, rootfs tarballs); honours XDG_CACHE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(os.environ.get("TESTBED_CACHE", Path(base) / "testbed"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Per-user data (results database, run directories); honours XDG_DATA_HOME."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    path = Path(os.environ.get("TESTBED_DATA", Path(base) / "testbed"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        raise UserError(f"TESTBED_DATA {path}: cannot use it as the data folder "
                        f"({getattr(e, 'strerror', None) or e}); allowed: a folder you can "
                        "write to") from e
    return path
