"""The pods' Python HTTP workload: who answered (pod, node, ip, container, port), health, bulk
bytes; `--server nginx` hands the port to nginx instead (the fast path, see nginx.py)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from testbed_node import nginx

MAX_BYTES = 1 << 30
CHUNK = 64 * 1024


class Identity:
    """What the server says about itself."""

    def __init__(self, pod: str, node: str, container: str, port: int, ip: str = "") -> None:
        self.pod = pod
        self.node = node
        self.container = container
        self.port = port
        self.ip = ip

    def describe(self, local_ip: str) -> dict[str, Any]:
        """The JSON body of `GET /`."""
        return {"pod": self.pod, "node": self.node, "ip": self.ip or local_ip,
                "container": self.container, "port": self.port}


class Handler(BaseHTTPRequestHandler):
    """GET /, /healthz and /bytes?n=N; HTTP/1.1 keep-alive for load tests."""

    protocol_version = "HTTP/1.1"
    server_version = "testbed-workload/1"
    identity: Identity

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs stay off: load tests would fill the log file."""

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        """Route a GET."""
        url = urlsplit(self.path)
        if url.path == "/":
            local_ip = self.connection.getsockname()[0]
            body = self.identity.describe(local_ip)
            body["client"] = self.client_address[0]
            self._send(200, json.dumps(body).encode(), "application/json")
        elif url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif url.path == "/bytes":
            self._bytes(parse_qs(url.query).get("n", ["0"])[0])
        else:
            self._send(404, b"not found\n", "text/plain")

    do_HEAD = do_GET

    def _bytes(self, raw: str) -> None:
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_BYTES:
            self._send(400, f"n must be 0..{MAX_BYTES}\n".encode(), "text/plain")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        block = b"x" * CHUNK
        left = n
        while left > 0:
            step = min(left, CHUNK)
            self.wfile.write(block[:step])
            left -= step


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer without the reverse DNS lookup of its bind address."""

    daemon_threads = True
    request_queue_size = 128

    def server_bind(self) -> None:
        """Bind; HTTPServer's getfqdn() would wait on DNS where there is none."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def make_server(identity: Identity, host: str = "0.0.0.0") -> Server:
    """A threaded server bound to identity.port (0 picks a free port)."""
    handler = type("BoundHandler", (Handler,), {"identity": identity})
    server = Server((host, identity.port), handler)
    if identity.port == 0:
        identity.port = server.server_address[1]
    return server


def main(argv: list[str] | None = None) -> int:
    """`python3 -m testbed_node.workload --port P [--pod NAME] [--container NAME]`."""
    ap = argparse.ArgumentParser(prog="testbed_node.workload", description=__doc__)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    ap.add_argument("--pod", default=os.environ.get("POD_NAME", ""))
    ap.add_argument("--container", default=os.environ.get("CONTAINER_NAME", "app"))
    ap.add_argument("--node", default=os.environ.get("NODE_NAME") or socket.gethostname())
    ap.add_argument("--ip", default=os.environ.get("POD_IP", ""))
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--server", choices=("python", "nginx"), default="python",
                    help="nginx: the fast identity server (no /bytes); python: this one")
    args = ap.parse_args(argv)
    if args.server == "nginx":
        nginx.exec_nginx(args.pod, args.node, args.container, args.port, args.ip)
    identity = Identity(args.pod, args.node, args.container, args.port, args.ip)
    server = make_server(identity, args.host)
    print(f"serving {identity.describe('')} on {args.host}:{identity.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
