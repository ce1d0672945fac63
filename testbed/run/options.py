"""What a run was asked to do, validated before anything starts."""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed import cni as cnis
from testbed.constants import INT64_MAX
from testbed.errors import UserError
from testbed.paths import data_dir
from testbed.scenario import Scenario, load, revalidate

MAX_USERS = 5000
SQLITE_MAGIC = b"SQLite format 3\x00"


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
    where = opts.scenario or "the default scenario"
    if spec.cni.name != module.name:
        spec.cni.images, spec.cni.version, spec.cni.module = {}, None, None
    spec.cni.name, spec.cni.backend = module.name, backend
    if version:
        spec.cni.version = version
    if opts.users is not None:
        if not 1 <= opts.users <= MAX_USERS:
            raise UserError(f"--users {opts.users} is out of range; allowed: 1 to {MAX_USERS}")
        spec.load.users = opts.users
    if opts.duration_s is not None:
        if not 1 <= opts.duration_s <= 24 * 3600:
            raise UserError(f"--duration {opts.duration_s:g} is out of range; allowed: 1 to "
                            "86400 seconds")
        spec.load.duration_s = opts.duration_s
    if opts.spawn_rate is not None:
        if not 0 < opts.spawn_rate <= 1000:
            raise UserError(f"--spawn-rate {opts.spawn_rate:g} is out of range; allowed: more "
                            "than 0 and at most 1000 users per second")
        spec.load.spawn_rate = opts.spawn_rate
    if opts.seed is not None:
        check_seed(opts.seed)
        spec.load.seed = opts.seed
    spec = revalidate(spec, f"{where} with the command-line options")
    if not opts.web:
        servable(spec, where)
    if not 1 <= opts.web_port <= 65535:
        raise UserError(f"--web-port {opts.web_port} is out of range; allowed: 1 to 65535")
    out = Path(opts.out) if opts.out else default_out()
    _writable(out, "--out")
    check_db(opts.db)
    return spec, module, backend, out


MAX_TRIALS = 20
LINK_MTU = 1500  # the Docker network between the nodes
MTU_CNIS = {("flannel", "vxlan"): 50, ("calico", "bgp"): 0, ("calico", "vxlan"): 50,
            ("weave", "auto"): 0}  # backends that take a pod MTU, and their tunnel overhead


def parse_mtus(text: str | None) -> list[int | None]:
    """`--mtu 1200,1400`: distinct pod MTUs; without it, one run per CNI at its default."""
    if text is None:
        return [None]
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--mtu {text!r}: not a list of numbers; allowed: e.g. "
                        "--mtu 1200,1400") from None
    if len(set(values)) != len(values):
        raise UserError(f"--mtu {text!r}: a value is listed twice; allowed: distinct MTUs")
    return list(values)


def check_mtu(module: cnis.Cni, backend: str, mtu: int) -> None:
    """A pod MTU the backend honours and that fits the nodes' 1500-byte Docker network."""
    overhead = MTU_CNIS.get((module.name, backend))
    if overhead is None:
        raise UserError(f"--mtu: {module.name}:{backend} takes the node's MTU and ignores a pod "
                        "MTU; allowed: flannel:vxlan, calico:bgp, calico:vxlan")
    top = LINK_MTU - overhead
    if not 576 <= mtu <= top:
        raise UserError(f"--mtu {mtu}: out of range for {module.name}:{backend}; allowed: 576 "
                        f"to {top} (the nodes' {LINK_MTU}-byte network minus {overhead} bytes "
                        "of encapsulation)")


def check_trials(trials: int) -> None:
    """`--trials` repeats the measurements on the same cluster."""
    if not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"--trials {trials} is out of range; allowed: 1 to {MAX_TRIALS}")


def check_seed(seed: int) -> None:
    """A seed is stored in an SQLite INTEGER column."""
    if not 0 <= seed <= INT64_MAX:
        raise UserError(f"--seed {seed} is out of range; allowed: 0 to {INT64_MAX}")


def servable(spec: Scenario, where: str) -> None:
    """Every load path the scenario lists must have what it loads (clients, services, ...)."""
    clients = [d for d in spec.deployments if d.pod_labels.get("role") == "client" and d.replicas]
    if not clients:
        raise UserError(f"{where}: load: a run needs client pods; allowed: a deployment with "
                        "labels {role: client} and replicas >= 1")
    if not spec.services:
        raise UserError(f"{where}: load.paths: there is no service to load; allowed: a "
                        "scenario with at least one service")
    target = next((s for s in spec.services if s.selector.get("app") == "echo"),
                  spec.services[0])
    if "nodeport" in spec.load.paths and not target.ports[0].node_port:
        raise UserError(f"{where}: load.paths: nodeport needs service {target.name}'s first "
                        "port to have a nodePort; allowed: paths the scenario serves "
                        "(drop nodeport, or give the service type NodePort and a nodePort)")
    if "ingress" in spec.load.paths and not (spec.ingress and spec.edge):
        raise UserError(f"{where}: load.paths: ingress needs ingress rules and the edge; "
                        "allowed: paths the scenario serves (drop ingress, or add a rule)")


def check_db(db: str | None) -> None:
    """`--db` (or $TESTBED_DB) must be an SQLite file or a new file in a writable folder."""
    from testbed.results.store import default_path

    path = Path(db).expanduser() if db else default_path()
    flag = "--db" if db else "the results database ($TESTBED_DB / $TESTBED_DATA)"
    try:
        st = path.stat()
    except FileNotFoundError:
        _writable(path.parent, f"{flag} {path}: its folder")
        return
    except (OSError, ValueError) as e:
        raise UserError(f"{flag} {path}: {getattr(e, 'strerror', None) or e}; allowed: an "
                        "SQLite file, or a new file in a folder you can write to") from e
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{flag} {path}: is not a regular file; allowed: an SQLite file, or "
                        "a new file in a folder you can write to")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot read it ({e.strerror}); allowed: an SQLite "
                        "file you can read and write") from e
    if head and head != SQLITE_MAGIC:
        raise UserError(f"{flag} {path}: is not an SQLite database; allowed: an SQLite file, "
                        "or a new file in a folder you can write to")
    if not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path}: is not writable; allowed: an SQLite file you can "
                        "write to")


def _writable(folder: Path, flag: str) -> None:
    try:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{flag} {folder} is not a folder; allowed: a folder you can "
                            "write to")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".testbed-probe-"):
            pass
    except (OSError, ValueError) as e:
        raise UserError(f"{flag} {folder} is not writable "
                        f"({getattr(e, 'strerror', None) or e}); allowed: a folder you can "
                        "write to") from e
