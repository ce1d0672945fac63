"""Build upstream Go binaries from their modules through the Go module proxy, cached by content.

Each build is a small wrapper module of ours that requires the upstream module at one version
and builds its commands (`go build MODULE/PKG`), so `go version -m` records the upstream module
version and checksum inside every binary. Nothing of the upstream project is kept in this
repository: the module proxy serves it, the per-user cache keeps it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed import console
from testbed.errors import ProviderError, UserError
from testbed.paths import cache_dir
from testbed.results.atomic import staged_dir

WRAPPER_PREFIX = "testbed.local/build"
BUILD_TIMEOUT = 3600.0
# The module proxy and checksum database here answer a request now and then with a 403/404
# they do not give a moment later: network steps are tried this many times.
NETWORK_TRIES = 4


@dataclass(frozen=True)
class GoSource:
    """An upstream Go module at one released version and the commands built from it."""

    name: str
    module: str
    version: str  # the module version the proxy serves (a tag or a commit pseudo-version)
    release: str  # the upstream release it is (the tag a user names)
    # (package path inside the module, "" for the root; output file name)
    binaries: tuple[tuple[str, str], ...]
    cgo: bool = False
    ldflags: str = ""  # "{release}" is replaced by the release
    tags: tuple[str, ...] = ()
    # Other modules the wrapper requires at fixed versions (e.g. nested modules of the repo).
    requires: tuple[tuple[str, str], ...] = ()
    # Module -> version pins that override the upstream requirement, each for a stated reason.
    pins: tuple[tuple[str, str, str], ...] = ()
    # Nested modules of the upstream go.mod's local replaces that no built package imports:
    # they get an empty go.mod so the module graph resolves.
    unused_modules: tuple[str, ...] = ()
    # Modules the checksum database does not know (verified against go.sum only).
    nosumdb: tuple[str, ...] = ()
    # Non-Go files the image takes from the module (module-relative source, context dest).
    files: tuple[tuple[str, str], ...] = ()
    # Whether `go mod tidy` resolves the graph; False where `requires` pins every dependency
    # (a module from before Go modules, whose dependencies' tests need newer modules).
    tidy: bool = True

    @property
    def revision(self) -> str:
        """The VCS commit (abbreviated) a pseudo-version names; "" for a tag."""
        tail = self.version.rsplit("-", 1)[-1]
        return tail if len(tail) == 12 and self.version.count("-") >= 2 else ""

    @property
    def ref(self) -> str:
        """`module@version` as `go` names it."""
        return f"{self.module}@{self.version}"

    def key(self) -> str:
        """Content key of the build: every input plus the local Go version."""
        doc = {**asdict(self), "go": go_version(), "recipe": 2}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@functools.cache
def go_version() -> str:
    """`go env GOVERSION` of the local toolchain (part of every build key)."""
    go = shutil.which("go")
    if go is None:
        raise UserError("source builds need Go: install Go (1.22 or newer) and put `go` on PATH")
    res = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise ProviderError(f"`go env GOVERSION` failed: {res.stderr.strip()}")
    return res.stdout.strip()


def go_root() -> Path:
    """Per-user Go caches (modules, build cache) and build outputs."""
    path = cache_dir() / "go"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _env(src: GoSource) -> dict[str, str]:
    root = go_root()
    env = dict(os.environ)
    env.update({
        "GOMODCACHE": str(root / "mod"), "GOCACHE": str(root / "build"),
        "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "GOWORK": "off",
        "CGO_ENABLED": "1" if src.cgo else "0",
    })
    if src.nosumdb:
        env["GONOSUMDB"] = ",".join(src.nosumdb)
    return env


def _go(args: list[str], cwd: Path, env: dict[str, str], what: str, tries: int = 1) -> str:
    for attempt in range(1, tries + 1):
        try:
            res = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True,
                                 text=True, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise ProviderError(f"{what}: timed out after {BUILD_TIMEOUT:.0f}s") from e
        if res.returncode == 0 or attempt == tries:
            break
        console.progress(f"{what}: failed (try {attempt} of {tries}), trying again")
        time.sleep(2 * attempt)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("go: downloading")]
        if not lines:  # `go ... -json` reports its error in the JSON on stdout
            with contextlib.suppress(ValueError):
                lines = [str(json.loads(res.stdout).get("Error", ""))]
        raise ProviderError(f"{what} failed:\n" + "\n".join(lines[-20:]))
    return res.stdout


def download(src: GoSource) -> dict[str, Any]:
    """`go mod download -json MODULE@VERSION`: the module's directory and checksum."""
    tmp = Path(tempfile.mkdtemp(prefix="testbed-go-"))
    try:
        out = _go(["mod", "download", "-json", src.ref], tmp, _env(src),
                  f"go mod download {src.ref}", tries=NETWORK_TRIES)
    except ProviderError as e:
        said = str(e).splitlines()[-1].strip()
        if any(code in said for code in ("403", "404", "410", "unknown revision")):
            raise UserError(f"the Go module proxy does not serve {src.ref}: choose a release "
                            f"it serves (go said: {said})") from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info: dict[str, Any] = json.loads(out)
    return info


def _wrapper_gomod(src: GoSource, upstream_dir: Path, work: Path, env: dict[str, str]) -> str:
    """Our go.mod: require upstream, carry its versioned replaces, resolve its local ones."""
    major_minor = ".".join(go_version().removeprefix("go").split(".")[:2])
    lines = [f"module {WRAPPER_PREFIX}/{src.name}", "", f"go {major_minor}", "",
             f"require {src.module} {src.version}"]
    lines += [f"require {m} {v}" for m, v in src.requires]
    pinned = {m for m, _, _ in src.pins}
    required = dict(src.requires)
    upstream = upstream_dir / "go.mod"
    replaces: list[dict[str, Any]] = []
    if upstream.is_file():
        doc = json.loads(_go(["mod", "edit", "-json", str(upstream)], work, env,
                             "reading the upstream go.mod"))
        replaces = doc.get("Replace") or []
    for rep in replaces:
        old, new = rep["Old"]["Path"], rep["New"]
        if old in pinned:
            continue
        if new.get("Version"):
            lines.append(f"replace {old} => {new['Path']} {new['Version']}")
        elif old in required:
            lines.append(f"replace {old} => {old} {required[old]}")
        elif old in src.unused_modules:
            stub = work / "unused" / old.replace("/", "_")
            stub.mkdir(parents=True, exist_ok=True)
            (stub / "go.mod").write_text(f"module {old}\n")
            lines.append(f"replace {old} => ./{stub.relative_to(work)}")
        else:
            raise ProviderError(f"{src.ref}: its go.mod replaces {old} with the local folder "
                                f"{new['Path']}; the build must say which version serves it")
    lines += [f"replace {m} => {m} {v} // {why}" for m, v, why in src.pins]
    return "\n".join(lines) + "\n"


def _package(src: GoSource, pkg: str) -> str:
    return f"{src.module}/{pkg}" if pkg else src.module


def build(src: GoSource) -> Path:
    """Build `src`'s binaries unless a build with the same key is cached; return their folder.

    The folder holds the binaries and `provenance.json` (module, version, checksum, Go version,
    and what `go version -m` reports for each binary).
    """
    root = go_root()
    key = src.key()[:16]
    out = root / "bin" / f"{src.name}-{key}"
    if (out / "provenance.json").is_file():
        return out
    env = _env(src)
    with console.step(f"Building {src.name} {src.release} from {src.ref}"):
        console.progress(f"downloading {src.ref} through the Go module proxy")
        info = download(src)
        upstream_dir = Path(info["Dir"])
        work = root / "work" / f"{src.name}-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "go.mod").write_text(_wrapper_gomod(src, upstream_dir, work, env))
        imports = "\n".join(f'\t_ "{_package(src, p)}"' for p, _ in src.binaries)
        (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n"
                                       f"{imports}\n)\n")
        if src.tidy:
            console.progress("resolving and downloading dependencies (go mod tidy)")
            _go(["mod", "tidy"], work, env, f"resolving the dependencies of {src.ref}",
                tries=NETWORK_TRIES)
        else:
            console.progress(f"downloading {len(src.requires)} pinned dependencies")
        with staged_dir(out) as staging:
            for i, (pkg, name) in enumerate(src.binaries, 1):
                console.progress(f"compiling {name} ({i} of {len(src.binaries)}): "
                                 f"{_package(src, pkg)}")
                args = ["build", "-trimpath", "-o", str(staging / name)]
                if src.tags:
                    args += ["-tags", ",".join(src.tags)]
                if src.ldflags:
                    args += ["-ldflags", src.ldflags.format(
                        release=src.release, release_bare=src.release.removeprefix("v"),
                        revision=src.revision)]
                # a build also fetches what go.sum still lacks (pinned, untidied modules)
                _go([*args, _package(src, pkg)], work, env, f"compiling {name}",
                    tries=1 if src.tidy else NETWORK_TRIES)
            for rel, dest in src.files:
                target = staging / "files" / dest
                source = upstream_dir / rel
                if source.is_dir():
                    shutil.copytree(source, target, dirs_exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target)
            for path in (staging / "files").rglob("*") if (staging / "files").exists() else ():
                path.chmod(path.stat().st_mode | 0o200)  # module cache files are read-only
            prov = {"module": src.module, "version": src.version, "release": src.release,
                    "vcs_revision": src.revision,
                    "sum": info.get("Sum", ""), "go": go_version(), "cgo": src.cgo,
                    "pins": [{"module": m, "version": v, "why": w} for m, v, w in src.pins],
                    "binaries": {name: _version_m(staging / name, env, src)
                                 for _, name in src.binaries}}
            (staging / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
        shutil.rmtree(work, ignore_errors=True)
    return out


def _version_m(binary: Path, env: dict[str, str], src: GoSource) -> dict[str, Any]:
    """What `go version -m` reports: Go version, main path, the upstream module as a dependency
    (version and checksum) and build settings. Module zips carry no VCS data, so there is no
    vcs.revision setting; the pseudo-version's commit stands for it where there is one."""
    text = _go(["version", "-m", str(binary)], binary.parent, env, f"go version -m {binary.name}")
    doc: dict[str, Any] = {"deps": {}, "settings": {}}
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) == 1 and ": " in parts[0]:
            doc["go"] = parts[0].split(": ", 1)[1]
        elif parts[0] == "path":
            doc["path"] = parts[1]
        elif parts[0] == "dep" and len(parts) >= 3:
            doc["deps"][parts[1]] = parts[2]
        elif parts[0] == "build" and "=" in parts[1]:
            k, v = parts[1].split("=", 1)
            doc["settings"][k] = v
    doc["vcs_revision"] = doc["settings"].get("vcs.revision", "") or src.revision
    doc["deps"] = {m: v for m, v in doc["deps"].items()
                   if m == src.module or m in dict(src.requires)}
    return doc


def provenance(folder: Path) -> dict[str, Any]:
    """The provenance record of a built folder."""
    doc: dict[str, Any] = json.loads((folder / "provenance.json").read_text())
    return doc
