"""`python -m testbed.bench.build`: cold and warm source builds per CNI, module download size.

Run after `python -m testbed images build` (the core images are not timed).
Cold: empty Go module and build caches (a temporary TESTBED_CACHE), so every module is
downloaded through the proxy and every package compiled. Second cold: the CNI's images
removed but the Go caches kept (what a user sees after `docker image prune`). Warm: nothing
changed, so nothing is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from testbed import cni as cnis
from testbed.bench import timed_cli
from testbed.images.build import resolve
from testbed.provider.docker import DockerProvider


def _build(cni: str, env: dict[str, str]) -> float:
    return timed_cli(["images", "build", "--cni", cni], env)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _remove_images(cni: str, cache: str) -> None:
    store = DockerProvider().images
    os.environ["TESTBED_CACHE"] = cache  # the tags hash the Go build keys, not the cache path
    module = cnis.REGISTRY[cni]
    for spec in module.source_images(module.default_release, module.module).values():
        store.remove(resolve(spec).tag)


def bench(cni: str) -> dict[str, Any]:
    """One CNI: cold, second cold and warm `images build`, and what the proxy sent."""
    cache = tempfile.mkdtemp(prefix=f"testbed-bench-{cni}-")
    env = {**os.environ, "TESTBED_CACHE": cache}
    try:
        _remove_images(cni, cache)
        shutil.rmtree(Path(cache) / "go", ignore_errors=True)
        cold = _build(cni, env)
        download = _size(Path(cache) / "go" / "mod" / "cache" / "download")
        _remove_images(cni, cache)
        second = _build(cni, env)
        warm = _build(cni, env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"cni": cni, "cold_s": round(cold, 1), "second_cold_s": round(second, 1),
            "warm_s": round(warm, 2), "module_download_mib": round(download / 2**20, 1)}


def main() -> None:
    """Print one row per CNI (JSON with --json)."""
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.build")
    ap.add_argument("--cnis", default="flannel,calico,weave")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for cni in args.cnis.split(","):
        row = bench(cni)
        rows.append(row)
        print(f"{cni:8} cold {row['cold_s']:6.1f} s, second cold (Go caches kept) "
              f"{row['second_cold_s']:6.1f} s, warm {row['warm_s']:5.2f} s, modules "
              f"{row['module_download_mib']:.0f} MiB", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
