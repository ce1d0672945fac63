"""Plain words about a run: its label, which build ran (upstream digests or source modules)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed.reports.model import GENERATOR_BOUND

INTERRUPTED = ("INTERRUPTED: this run was stopped before it finished; the figures cover only "
               "what was measured until then")


def cni_label(s: Mapping[str, Any]) -> str:
    """`flannel vxlan v0.28.10`, or just `weave` when there is no backend or release."""
    release = s.get("release") or (s.get("environment") or {}).get("release") or ""
    return " ".join(p for p in (str(s.get("cni", "?")), str(s.get("backend") or ""),
                                str(release)) if p)


def build_kind(s: Mapping[str, Any]) -> str:
    """`upstream`, `source` or `unknown`."""
    build = str(s.get("build") or "unknown").lower()
    return build if build in ("upstream", "source") else "unknown"


def column_label(s: Mapping[str, Any]) -> str:
    """A compare column: `flannel vxlan v0.28.10 [source]`."""
    mtu = f" mtu {s['cni_mtu']}" if s.get("cni_mtu") else ""
    return f"{cni_label(s)}{mtu} [{build_kind(s)}]"


def _digest(s: Mapping[str, Any], role: str, image: str) -> str:
    digests = (s.get("environment") or {}).get("image_digests") or {}
    if role in digests:
        return str(digests[role])
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    return str(digests.get(image, "digest not recorded"))


def build_sentence(s: Mapping[str, Any]) -> str:
    """Which build ran, in plain words a reader cannot mistake."""
    label = cni_label(s)
    images: Mapping[str, Any] = s.get("images") or {}
    env: Mapping[str, Any] = s.get("environment") or {}
    kind = build_kind(s)
    if kind == "upstream":
        parts = [f"{role}: {image} ({_digest(s, role, str(image))})"
                 for role, image in images.items()]
        return (f"{label} ran the UPSTREAM build, the published images: "
                + ("; ".join(parts) if parts else "images not recorded") + ".")
    if kind == "source":
        sources: Mapping[str, Any] = env.get("sources") or {}
        seen: dict[str, str] = {}
        adaptations = sorted({str(b.get("adaptations")) for b in sources.values()
                              if b.get("adaptations")})
        for builds in sources.values():
            for b in builds.values():
                if not isinstance(b, Mapping):
                    continue
                seen[f"{b.get('module')}@{b.get('version')}"] = (
                    f"{b.get('module')}@{b.get('version')} (release {b.get('release')}, "
                    f"{b.get('sum')}, {b.get('go')}"
                    + (f", commit {b['vcs_revision']}" if b.get("vcs_revision") else "") + ")")
        packages = env.get("packages") or {}
        bird = packages.get("bird")
        return (f"{label} ran the SOURCE build: the upstream code built here from "
                + ("; ".join(seen.values()) if seen else "modules not recorded") + "."
                + (f" BIRD is Debian's bird {bird}, standing in for Calico's BIRD fork."
                   if bird and "calico" in label else "")
                + "".join(f" Adapted: {a}." for a in adaptations))
    return f"{label}: which build ran was not recorded."


def warnings(s: Mapping[str, Any]) -> list[str]:
    """Interrupted run, generator-bound paths: said before any figure."""
    out = []
    if s.get("interrupted") or s.get("status") == "interrupted":
        out.append(INTERRUPTED)
    if s.get("status") == "running":
        out.append("RUNNING or CRASHED: this run has not been finalized; partial figures")
    if s.get("status") == "failed":
        out.append(f"FAILED: {s.get('error') or 'the run stopped on an error'}")
    bound = [str(p.get("path")) for p in s.get("paths") or [] if p.get("generator_bound")]
    if bound:
        out.append(f"{GENERATOR_BOUND} ({', '.join(bound)})")
    return out


def build_note(s: Mapping[str, Any]) -> str:
    """What `--build auto` chose and why, if the run recorded it."""
    return str(s.get("build_note") or (s.get("environment") or {}).get("build_note") or "")


def facts(s: Mapping[str, Any]) -> list[str]:
    """One line of when, how long, how hard."""
    bits = [f"run {s.get('run_id', '?')}"]
    for key, fmt in (("started_at", "started {}"), ("duration_s", "load {} s"),
                     ("users", "{} users"), ("spawn_rate", "spawn rate {}/s"),
                     ("seed", "seed {}"), ("scenario", "scenario {}")):
        if s.get(key) not in (None, ""):
            bits.append(fmt.format(s[key]))
    return [", ".join(bits)]
