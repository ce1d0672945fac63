"""What a run was asked to do, validated before anything starts."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed import cni as cnis
from testbed.errors import UserError
from testbed.paths import data_dir
from testbed.scenario import Scenario, load

MAX_USERS = 5000


@dataclass
class RunOptions:
    """Command-line choices for one run."""

    cni: str
    scenario: str | None = None
    duration_s: float | None = None
    users: int | None = None
    spawn_rate: float | None = None
    seed: int | None = None
    web: bool = False
    web_port: int = 8089
    keep: bool = False
    out: str | None = None
    db: str | None = None


def default_out() -> Path:
    """Run directories live beside the results database unless --out says otherwise."""
    return Path(os.environ.get("TESTBED_RUNS", data_dir() / "runs"))


def resolve(opts: RunOptions) -> tuple[Scenario, cnis.Cni, str, Path]:
    """Scenario with overrides applied, the CNI module and backend, and the output folder."""
    module, backend, version = cnis.parse(opts.cni)
    spec = load(opts.scenario)
    if spec.cni.name != module.name:
        spec.cni.images, spec.cni.version, spec.cni.module = {}, None, None
    spec.cni.name, spec.cni.backend = module.name, backend
    if version:
        spec.cni.version = version
    if opts.users is not None:
        if not 1 <= opts.users <= MAX_USERS:
            raise UserError(f"--users {opts.users} is out of range: use 1 to {MAX_USERS}")
        spec.load.users = opts.users
    if opts.duration_s is not None:
        if not 1 <= opts.duration_s <= 24 * 3600:
            raise UserError(f"--duration {opts.duration_s:g} is out of range: use 1 to 86400 "
                            "seconds")
        spec.load.duration_s = opts.duration_s
    if opts.spawn_rate is not None:
        if not 0 < opts.spawn_rate <= 1000:
            raise UserError(f"--spawn-rate {opts.spawn_rate:g} is out of range: use more than "
                            "0 and at most 1000 users per second")
        spec.load.spawn_rate = opts.spawn_rate
    if opts.seed is not None:
        spec.load.seed = opts.seed
    if not 1 <= opts.web_port <= 65535:
        raise UserError(f"--web-port {opts.web_port} is out of range: use 1 to 65535")
    out = Path(opts.out) if opts.out else default_out()
    _writable(out, "--out")
    if opts.db:
        _writable(Path(opts.db).parent, "--db")
    return spec, module, backend, out


def _writable(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".testbed-probe-"):
            pass
    except OSError as e:
        raise UserError(f"{flag} {folder} is not writable ({e.strerror}): choose a folder you "
                        "can write to") from e
