"""`/bin/calico-node`: one program, one role per flag, as in calico/node.

    calico-node -startup                    node/pkg/lifecycle/startup
    calico-node -allocate-tunnel-addrs [-allocate-tunnel-addrs-run-once]
    calico-node -felix                      the dataplane agent
    calico-node -confd                      BIRD configuration from etcd
    calico-node -felix-ready [-bird-ready] | -felix-live [-bird-live]   health probes
    calico-node -v                          version
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable

from testbed.reference.calico import UPSTREAM_VERSION, confd, felix, startup

BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close")


def parse_protocols(text: str) -> list[dict[str, str]]:
    """BGP sessions from `birdcl show protocols` (name, state, since, info)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[1] != "BGP":
            continue
        info_at = next((i for i, p in enumerate(parts) if p in BGP_STATES), len(parts))
        out.append({"name": parts[0], "proto": parts[1], "table": parts[2],
                    "state": parts[3], "since": " ".join(parts[4:info_at]),
                    "info": " ".join(parts[info_at:])})
    return out


def bird_protocols() -> list[dict[str, str]]:
    """Ask the running BIRD over its control socket."""
    res = subprocess.run(["birdcl", "-s", confd.BIRD_SOCKET, "show", "protocols"],
                         capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise RuntimeError(f"BIRD is not ready: {(res.stderr or res.stdout).strip()}")
    return parse_protocols(res.stdout)


def bird_ready() -> int:
    """-bird-ready: every BGP session Established (and the config rendered)."""
    if not os.path.exists(os.path.join(confd.CONFIG_DIR, "bird.cfg")):
        print("BIRD is not ready: no configuration rendered yet", file=sys.stderr)
        return 1
    try:
        down = [p["name"] for p in bird_protocols() if p["info"].split()[:1] != ["Established"]]
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(str(e), file=sys.stderr)
        return 1
    if down:
        print(f"BIRD is not ready: BGP not established with {','.join(down)}", file=sys.stderr)
        return 1
    return 0


def felix_probe(path: str) -> int:
    """-felix-ready / -felix-live: felix's health endpoint."""
    port = os.environ.get("FELIX_HEALTHPORT", "9099")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as e:
        print(f"calico/node is not ready: Felix is not {path[:-3]}: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the first flag."""
    args = list(sys.argv[1:] if argv is None else argv)
    flag = args[0] if args else ""
    if flag in ("-v", "--version"):
        print(f"{UPSTREAM_VERSION}-testbed-reference")
        return 0
    if flag == "-startup":
        return startup.run()
    if flag == "-allocate-tunnel-addrs":
        return startup.allocate_tunnel_addrs()
    if flag == "-felix":
        return felix.run()
    if flag == "-confd":
        return confd.run()
    probes: dict[str, Callable[[], int]] = {
        "-bird-ready": bird_ready,
        "-bird-live": lambda: 0 if os.path.exists(confd.BIRD_SOCKET) else 1,
        "-felix-ready": lambda: felix_probe("readiness"),
        "-felix-live": lambda: felix_probe("liveness"),
    }
    if flag in probes:
        # A probe may combine checks (`-felix-ready -bird-ready`): all must pass.
        unknown = [a for a in args if a not in probes]
        if unknown:
            print(f"unknown health flag(s): {' '.join(unknown)}", file=sys.stderr)
            return 2
        return max(probes[a]() for a in args)
    print(f"usage: calico-node -startup|-allocate-tunnel-addrs|-felix|-confd|-bird-ready|"
          f"-bird-live|-felix-ready|-felix-live|-v (got {flag!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
