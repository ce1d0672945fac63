"""`/home/weave/weave` of the reference build: the few `weave --local` commands a node needs.

    weave --local setup-cni        copy weaveutil to <cni-bin>/weave-plugin-<version>, link
                                   weave-net and weave-ipam to it, write 10-weave.conflist when
                                   /etc/cni/net.d exists and has none
    weave --local status [targets|connections|peers|ipam]
    weave --local report           the JSON report
    weave --local expose [CIDR]    give bridge `weave` an address (allocated when none given)
    weave --local version

Everything else upstream's script does (launch, attach, dns, ...) needs Docker and is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from testbed.reference.weave import EXPOSE_ID, VERSION

WEAVEUTIL = "/usr/bin/weaveutil"
CONFLIST = {
    "cniVersion": "1.0.0", "name": "weave", "disableCheck": True,
    "plugins": [{"name": "weave", "type": "weave-net", "hairpinMode": True},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}],
}


def setup_cni(bin_dir: str = "/opt/cni/bin", conf_dir: str = "/etc/cni/net.d",
              source: str = WEAVEUTIL) -> list[str]:
    """Install the plugin as upstream's launch does; return what was written."""
    written = []
    bins = Path(bin_dir)
    bins.mkdir(parents=True, exist_ok=True)
    plugin = bins / f"weave-plugin-{VERSION}"
    if not plugin.exists():
        tmp = plugin.with_name(plugin.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, plugin)
        written.append(str(plugin))
    for link in ("weave-net", "weave-ipam"):
        path = bins / link
        if path.is_file() and not path.is_symlink():
            path.unlink()  # a legacy copy: links from now on
        if os.path.realpath(path) != str(plugin):
            tmp = bins / f"{link}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(plugin)
            os.replace(tmp, path)
            written.append(str(path))
    conf = Path(conf_dir)
    if conf.is_dir() and not (conf / "10-weave.conflist").exists():
        (conf / "10-weave.conflist").write_text(json.dumps(CONFLIST, indent=4) + "\n")
        written.append(str(conf / "10-weave.conflist"))
    return written


def call(method: str, path: str, accept: str = "") -> str:
    """One request to the local weaver (WEAVE_HTTP_ADDR, default 127.0.0.1:6784)."""
    addr = os.environ.get("WEAVE_HTTP_ADDR") or "127.0.0.1:6784"
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        if e.code == 503 and path.startswith("/status"):
            return body
        raise SystemExit(body.strip() or f"{method} {path}: HTTP {e.code}") from e
    except urllib.error.URLError as e:
        raise SystemExit(f"weave is not running (http://{addr}: {e.reason})") from e


def main(argv: list[str] | None = None) -> int:
    """Dispatch one command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--local"]:
        args = args[1:]
    cmd, rest = (args[0], args[1:]) if args else ("help", [])
    if cmd == "setup-cni":
        setup_cni()
    elif cmd == "version":
        print(f"weave script {VERSION}")
    elif cmd == "status":
        sub = f"/{rest[0]}" if rest else ""
        sys.stdout.write(call("GET", f"/status{sub}"))
    elif cmd == "report":
        sys.stdout.write(call("GET", "/report", accept="application/json") + "\n")
    elif cmd == "expose":
        cidr = rest[0] if rest else call("POST", f"/ip/{EXPOSE_ID}").strip()
        call("POST", f"/expose/{cidr}")
        print(cidr)
    elif cmd in ("help", "--help"):
        print(__doc__)
    else:
        print(f"weave {cmd}: not implemented by the testbed reference build "
              "(it needs Docker or the Weave Cloud)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
