"""weaver's HTTP API on --http-addr and the text of `weave status`, as upstream serves them.

Routes follow prog/weaver/http.go, ipam/http.go and router/http.go: GET /status[/targets|
/connections|/peers|/ipam], GET /report (JSON), POST|GET|DELETE /ip/<id>[/<ip>/<prefixlen>],
PUT /ip/<id>/<ip>/<prefixlen>, GET /ipinfo/defaultsubnet, POST /expose/<ip>/<prefixlen>,
POST /connect, POST /forget, DELETE /peer. The status text is upstream's template rendered by
hand; the reference build adds one line, `Datapath:`, to the router section.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

CONNECTION_STATES = ("established", "pending", "retrying", "failed", "connecting")


class Router(Protocol):
    """What the API needs from weaver."""

    def report(self) -> dict[str, Any]: ...

    def allocate(self, ident: str, subnet: str | None) -> str: ...

    def claim(self, ident: str, cidr: str) -> None: ...

    def lookup(self, ident: str, subnet: str | None) -> list[str]: ...

    def release(self, ident: str, ip: str | None) -> None: ...

    def expose(self, cidr: str, skip_nat: bool) -> None: ...

    def connect(self, peers: list[str], replace: bool) -> None: ...

    def forget(self, peers: list[str]) -> None: ...


class ApiError(Exception):
    """An error answered with `status` and the message as text (Go's http.Error)."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


# -- status text (prog/weaver/http.go templates) ---------------------------------------------

def _counts(counts: dict[str, int], order: tuple[str, ...]) -> str:
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))


def _state(on: Any) -> str:
    return "enabled" if on else "disabled"


def ipam_state(ipam: dict[str, Any]) -> str:
    """The `Status:` line of the ipam service."""
    if ipam.get("Entries"):
        if not any(e.get("Size", 0) > 0 and e.get("IsKnownPeer") for e in ipam["Entries"]):
            return "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead"
        if ipam.get("PendingAllocates"):
            return "waiting for IP(s) to become available"
        return "ready"
    paxos = ipam.get("Paxos")
    if paxos:
        if paxos.get("Elector"):
            return (f"awaiting consensus (quorum: {paxos.get('Quorum')}, "
                    f"known: {paxos.get('KnownNodes')})")
        return "priming"
    return "idle"


def status_text(report: dict[str, Any]) -> str:
    """`weave status`."""
    r = report["Router"]
    proto = (f"{r['ProtocolMaxVersion']}" if r["ProtocolMinVersion"] == r["ProtocolMaxVersion"]
             else f"{r['ProtocolMinVersion']}..{r['ProtocolMaxVersion']}")
    conns = r.get("Connections") or []
    conn_counts: dict[str, int] = {}
    for c in conns:
        conn_counts[c["State"]] = conn_counts.get(c["State"], 0) + 1
    peer_counts: dict[str, int] = {}
    for p in r.get("Peers") or []:
        for c in p.get("Connections") or []:
            key = "established" if c.get("Established") else "pending"
            peer_counts[key] = peer_counts.get(key, 0) + 1
    cc = _counts(conn_counts, CONNECTION_STATES)
    pc = _counts(peer_counts, ("established", "pending"))
    lines = [
        f"        Version: {report['Version']} (version check update disabled)",
        "",
        "        Service: router",
        f"       Protocol: {r['Protocol']} {proto}",
        f"           Name: {r['Name']}({r['NickName']})",
        f"     Encryption: {_state(r.get('Encryption'))}",
        f"  PeerDiscovery: {_state(r.get('PeerDiscovery'))}",
        f"        Targets: {len(r.get('Targets') or [])}",
        f"    Connections: {len(conns)}" + (f" ({cc})" if cc else ""),
        f"          Peers: {len(r.get('Peers') or [])}" + (f" (with {pc} connections)"
                                                          if pc else ""),
        f" TrustedSubnets: {', '.join(r.get('TrustedSubnets') or []) or 'none'}",
    ]
    if r.get("Datapath"):
        lines.append(f"       Datapath: {r['Datapath']}")
    ipam = report.get("IPAM")
    if ipam:
        lines += ["", "        Service: ipam", f"         Status: {ipam_state(ipam)}",
                  f"          Range: {ipam['Range']}",
                  f"  DefaultSubnet: {ipam['DefaultSubnet']}"]
    return "\n".join(lines) + "\n"


def connections_text(report: dict[str, Any]) -> str:
    """`weave status connections`."""
    out = []
    for c in report["Router"].get("Connections") or []:
        attrs = " ".join(f"{k}={v}" for k, v in sorted((c.get("Attrs") or {}).items())
                         if k != "name")
        arrow = "->" if c["Outbound"] else "<-"
        out.append(f"{arrow} {c['Address']:<21} {c['State']:<11} {c['Info']} {attrs}".rstrip())
    return "".join(line + "\n" for line in out)


def peers_text(report: dict[str, Any]) -> str:
    """`weave status peers`."""
    out = []
    for p in report["Router"].get("Peers") or []:
        out.append(f"{p['Name']}({p['NickName']})")
        for c in p.get("Connections") or []:
            arrow = "->" if c["Outbound"] else "<-"
            who = f"{c['Name']}({c['NickName']})"
            out.append(f"   {arrow} {c['Address']:<21} {who:<37} "
                       f"{'established' if c['Established'] else 'pending'}")
    return "".join(line + "\n" for line in out)


def targets_text(report: dict[str, Any]) -> str:
    """`weave status targets`."""
    return "".join(f"{t}\n" for t in report["Router"].get("Targets") or [])


def ipam_text(report: dict[str, Any]) -> str:
    """`weave status ipam`: IPs per owning peer, ours first."""
    ipam, router = report.get("IPAM") or {}, report["Router"]
    total = ipam.get("RangeNumIPs") or 1
    stats: dict[str, dict[str, Any]] = {}
    for e in ipam.get("Entries") or []:
        s = stats.setdefault(e["Peer"], {"nick": e["Nickname"], "ips": 0,
                                         "reachable": e["IsKnownPeer"]})
        s["ips"] += e["Size"]
    out = []

    def line(name: str, s: dict[str, Any], info: str) -> None:
        out.append(f"{name + '(' + s['nick'] + ')':<37} {s['ips']:>8} IPs "
                   f"({s['ips'] * 100.0 / total:04.1f}% of total) {info}".rstrip())

    if router["Name"] in stats:
        line(router["Name"], stats[router["Name"]], f"({ipam.get('ActiveIPs', 0)} active)")
    for name, s in stats.items():
        if name != router["Name"]:
            line(name, s, "" if s["reachable"] else "- unreachable!")
    return "".join(x + "\n" for x in out)


STATUS_VIEWS: dict[str, Callable[[dict[str, Any]], str]] = {
    "": status_text, "/targets": targets_text, "/connections": connections_text,
    "/peers": peers_text, "/ipam": ipam_text, "/dns": lambda r: "",
}

# -- the HTTP server -------------------------------------------------------------------------

_IP_SUBNET = re.compile(r"^/ip/([^/]+)/(\d+\.\d+\.\d+\.\d+)/(\d+)$")
_IP_ONE = re.compile(r"^/ip/([^/]+)/(\d+\.\d+\.\d+\.\d+)$")
_IP = re.compile(r"^/ip/([^/]+)$")
_EXPOSE = re.compile(r"^/expose/(\d+\.\d+\.\d+\.\d+)/(\d+)$")


class _Handler(BaseHTTPRequestHandler):
    server_version = "weave-reference"
    router: Router
    read_only: bool = False
    log: Callable[[str], None] = staticmethod(lambda m: None)  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: str | bytes = b"",
               ctype: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        if data:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, list[str]]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        form = parse_qs(urlsplit(self.path).query)
        for k, v in parse_qs(body).items():
            form.setdefault(k, []).extend(v)
        return form

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        try:
            if self.read_only and method != "GET":
                raise ApiError("404 page not found", 404)
            status, body, ctype = self._route(method, path, query)
            self._reply(status, body, ctype)
        except ApiError as e:
            if e.status >= 500:
                self.log(f"[http] {method} {path}: {e}")
            self._reply(e.status, f"{e}\n")
        except Exception as e:  # a bug must not kill the server thread silently
            self.log(f"[http] {method} {path}: internal error: {e!r}")
            self._reply(500, f"internal error: {e}\n")

    def _route(self, method: str, path: str, query: dict[str, list[str]]
               ) -> tuple[int, str, str]:
        text, js = "text/plain; charset=utf-8", "application/json"
        r = self.router
        if method == "GET":
            if path == "/status" and query.get("format") == ["json"]:
                return 200, json.dumps(r.report(), indent=4), js
            if path.startswith("/status") and path[len("/status"):] in STATUS_VIEWS:
                report = r.report()
                view = STATUS_VIEWS[path[len("/status"):]]
                return (200 if report.get("Ready") else 503), view(report), text
            if path == "/report":
                fmt = query.get("format")
                if fmt and fmt[0] not in ("json", "{{json .}}"):
                    raise ApiError("error: Go template formats are not supported by the "
                                   "reference build; use format=json")
                return 200, json.dumps(r.report(), indent=4), js
            if path == "/ipinfo/defaultsubnet":
                return 200, str(r.report()["IPAM"]["DefaultSubnet"]), text
            if path == "/ipinfo/tracker":
                return 200, "", text
            if m := _IP_SUBNET.match(path):
                addrs = r.lookup(m[1], f"{m[2]}/{m[3]}")
                if not addrs:
                    raise ApiError("404 page not found", 404)
                return 200, " ".join(addrs), text
            if m := _IP.match(path):
                addrs = r.lookup(m[1], None)
                if not addrs:
                    raise ApiError("404 page not found", 404)
                return 200, " ".join(addrs), text
        elif method == "POST":
            if m := _IP_SUBNET.match(path):  # ?check-alive is accepted and ignored
                return 200, r.allocate(m[1], f"{m[2]}/{m[3]}"), text
            if m := _IP.match(path):
                return 200, r.allocate(m[1], None), text
            if m := _EXPOSE.match(path):
                skip = (query.get("skipNAT") or ["false"])[0].lower() in ("1", "true", "t")
                r.expose(f"{m[1]}/{m[2]}", skip)
                return 204, "", text
            if path in ("/connect", "/forget"):
                form = self._form()
                peers = form.get("peer", [])
                if path == "/connect":
                    r.connect(peers, (form.get("replace") or [""])[0] == "true")
                else:
                    r.forget(peers)
                return 200, "", text
        elif method == "PUT":
            if m := _IP_SUBNET.match(path):
                r.claim(m[1], f"{m[2]}/{m[3]}")
                return 204, "", text
        elif method == "DELETE":
            if m := _IP_ONE.match(path):
                r.release(m[1], m[2])
                return 204, "", text
            if m := _IP.match(path):
                r.release(m[1], None)
                return 204, "", text
            if path == "/peer":
                return 204, "", text
            if path.startswith("/peer/"):
                return 200, f"0 IPs taken over from {path[len('/peer/'):]}\n", text
        raise ApiError("404 page not found", 404)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


def serve(addr: str, router: Router, log: Callable[[str], None],
          read_only: bool = False) -> ThreadingHTTPServer:
    """Start the API on `host:port` in a background thread."""
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--http-addr must be host:port (unix sockets are not supported "
                         f"by the reference build): {addr!r}")
    handler = type("Handler", (_Handler,), {"router": router, "read_only": read_only,
                                            "log": staticmethod(log)})
    server = ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name=f"http {addr}").start()
    return server


__all__ = ["ApiError", "Router", "serve", "status_text"]
