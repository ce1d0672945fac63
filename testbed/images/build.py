"""Build images from Debian packages: content-hashed tags, so a warm build rebuilds nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed import console
from testbed.errors import ProviderError, UserError
from testbed.images import gobuild
from testbed.images.catalog import BASE, ImageSpec
from testbed.paths import IMAGES_DIR, REPO_ROOT, cache_dir
from testbed.provider.base import ImageStore
from testbed.results.atomic import staged_dir

DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LOCAL_DEBIAN_BASES = ("debian:bookworm", "debian:bookworm-slim", "debian:12")
PYTHON_TAG = ("3.11", "cp", ("manylinux2014_x86_64", "manylinux_2_17_x86_64",
                             "manylinux_2_28_x86_64", "linux_x86_64"))


@dataclass(frozen=True)
class Resolved:
    """An image spec with its content hash and tag."""

    spec: ImageSpec
    digest: str

    @property
    def tag(self) -> str:
        """`testbed/<name>:<first 12 hex of the input hash>`."""
        return f"{self.spec.repository}:{self.digest[:12]}"


def _hash_tree(h: hashlib._Hash, root: Path, rel: str) -> None:
    path = root / rel
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if "__pycache__" in f.parts or f.suffix == ".pyc":
            continue
        h.update(str(f.relative_to(root)).encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")


def base_packages() -> list[str]:
    """The Debian packages of the base rootfs (images/base/packages.txt)."""
    lines = (IMAGES_DIR / "base" / "packages.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def resolve(spec: ImageSpec) -> Resolved:
    """Compute the content hash of an image's inputs (its base's hash included)."""
    h = hashlib.sha256(f"{spec.name}\0".encode())
    if spec is BASE:
        h.update(f"{DEBIAN_SUITE}\0{' '.join(base_packages())}".encode())
    else:
        h.update(resolve(BASE).digest.encode())
        _hash_tree(h, IMAGES_DIR, spec.folder)
        for src in spec.sources:
            _hash_tree(h, REPO_ROOT, src)
        h.update("\0".join(spec.wheels).encode())
        for go in spec.go:
            h.update(f"\0go:{go.key()}".encode())
    return Resolved(spec, h.hexdigest())


def ensure(store: ImageStore, specs: tuple[ImageSpec, ...]) -> dict[str, str]:
    """Build whichever of `specs` (and the base) is missing; return name -> tag."""
    base = resolve(BASE)
    if not store.exists(base.tag):
        _build_base(store, base)
    tags = {BASE.name: base.tag}
    for spec in specs:
        if spec is BASE:
            continue
        res = resolve(spec)
        if not store.exists(res.tag):
            _build(store, res, base.tag)
        tags[spec.name] = res.tag
    return tags


def _build_base(store: ImageStore, base: Resolved) -> None:
    with console.step(f"Building base rootfs {base.tag} from Debian packages"):
        local = next((t for t in LOCAL_DEBIAN_BASES if store.exists(t)), None)
        if local:
            console.progress(f"using local Debian image {local}")
            _build_base_from_image(store, base, local)
        else:
            _build_base_mmdebstrap(store, base)


def _build_base_from_image(store: ImageStore, base: Resolved, image: str) -> None:
    with tempfile.TemporaryDirectory(prefix="testbed-base-") as ctx:
        Path(ctx, "Dockerfile").write_text(
            f"FROM {image}\nRUN apt-get update && apt-get install -y --no-install-recommends "
            f"{' '.join(base_packages())} && rm -rf /var/lib/apt/lists/*\n"
        )
        store.build(ctx, base.tag, {}, {"io.testbed.image": "base"}, console.progress)


def _build_base_mmdebstrap(store: ImageStore, base: Resolved) -> None:
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise UserError(
            "no Debian base image and no mmdebstrap: run `apt-get install mmdebstrap` "
            "(or load a debian:bookworm image) and retry"
        )
    mirror = os.environ.get("TESTBED_DEBIAN_MIRROR", DEFAULT_MIRROR)
    tarball = cache_dir() / f"base-{base.digest[:12]}.tar"
    cmd = [tool, "--variant=minbase", f"--include={','.join(base_packages())}",
           "--aptopt=Acquire::Retries \"3\"", DEBIAN_SUITE, str(tarball), mirror]
    console.progress(f"mmdebstrap {DEBIAN_SUITE} from {mirror}")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        tail = [*tail[-19:], line.rstrip()]
        if line.startswith("I: "):
            console.progress(line[3:].rstrip())
    if proc.wait() != 0:
        tarball.unlink(missing_ok=True)
        raise ProviderError("mmdebstrap failed:\n" + "\n".join(tail))
    try:
        store.import_rootfs(
            str(tarball), base.tag,
            ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LABEL io.testbed.image=base"])
    finally:
        tarball.unlink(missing_ok=True)


def _wheels(spec: ImageSpec) -> Path:
    """Wheels for an image, downloaded on the host once (containers lack the host's CA)."""
    key = hashlib.sha256("\0".join(spec.wheels).encode()).hexdigest()[:12]
    dest = cache_dir() / "wheels" / key
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    version, impl, platforms = PYTHON_TAG
    with staged_dir(dest, replace=False) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", version, "--implementation", impl,
               "-d", str(tmp)]
        for plat in platforms:
            cmd += ["--platform", plat]
        console.progress(f"pip download {' '.join(spec.wheels)}")
        res = subprocess.run([*cmd, *spec.wheels], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise ProviderError(f"pip download for {spec.name} failed: "
                                f"{res.stderr.strip()[-500:]}")
    return dest


def _build(store: ImageStore, res: Resolved, base_tag: str) -> None:
    spec = res.spec
    with console.step(f"Building image {res.tag}"), \
            tempfile.TemporaryDirectory(prefix="testbed-ctx-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(IMAGES_DIR / spec.folder, ctx, dirs_exist_ok=True)
        for src in spec.sources:
            path = REPO_ROOT / src
            dest = ctx / src
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, dest)
        (ctx / "wheels").mkdir(exist_ok=True)
        (ctx / "wheels" / "requirements.txt").write_text("\n".join(spec.wheels) + "\n")
        if spec.wheels:
            for whl in _wheels(spec).iterdir():
                shutil.copy2(whl, ctx / "wheels" / whl.name)
        labels = {"io.testbed.image": spec.name, "io.testbed.inputs": res.digest}
        for go in spec.go:
            folder = gobuild.build(go)
            shutil.copytree(folder, ctx / "go" / go.name, symlinks=True)
            prov = gobuild.provenance(folder)
            if spec.cni:  # a CNI's image is source-built; a tool in a core image is not its kind
                labels["io.testbed.build"] = "source"
            labels |= {f"io.testbed.source.{go.name}": json.dumps(
                           {k: prov[k] for k in ("module", "version", "release", "sum", "go",
                                                 "vcs_revision")}, sort_keys=True)}
        store.build(str(ctx), res.tag, {"BASE": base_tag}, labels, console.progress)
