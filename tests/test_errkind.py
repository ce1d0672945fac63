"""Error kinds: real exceptions (the kernel's, Locust's and geventhttpclient's) get short names."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.load.locust import parse_errors, parse_failures, totals
from testbed_contract.errkind import of_exception, of_text

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_socket_errors_from_the_kernel() -> None:
    with pytest.raises(OSError) as refused:
        socket.create_connection(("127.0.0.1", _closed_port()), timeout=1)
    assert of_exception(refused.value) == "connection_refused"
    server = socket.create_server(("127.0.0.1", 0))
    try:
        client = socket.create_connection(server.getsockname(), timeout=0.2)
        with pytest.raises(OSError) as silent:  # accepted by the backlog, never answered
            client.recv(1)
        assert of_exception(silent.value) == "timeout"
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: an RST
        with pytest.raises(OSError) as reset:
            client.recv(1)
        assert of_exception(reset.value) == "connection_reset"
        client.close()
    finally:
        server.close()
    unreachable = OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
    assert of_exception(unreachable) == "no_route_to_host"
    assert of_exception(OSError(errno.EADDRNOTAVAIL, "x")) == "EADDRNOTAVAIL"
    assert of_exception(ValueError("odd")) == "ValueError"


# Requests through Locust's FastHttpSession, in a process of its own (Locust patches the
# standard library with gevent on import), answered the way the locustfile judges them.
LOCUST_PROBE = r"""
import json, socket, struct, sys
import gevent, gevent.server
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locust.stats import StatsError
from testbed_contract.errkind import of_exception

def silent(sock, addr): gevent.sleep(5)
def closed(sock, addr): sock.recv(100); sock.close()
def status(sock, addr):
    sock.recv(1000)
    sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    gevent.sleep(1)
def wrong(sock, addr):
    sock.recv(1000)
    sock.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    gevent.sleep(1)

env, seen = Environment(), []
env.events.request.add_listener(lambda exception=None, **_: seen.append(exception))
ports = {}
for name, handler in (("silent", silent), ("closed", closed), ("status", status),
                      ("wrong", wrong)):
    srv = gevent.server.StreamServer(("127.0.0.1", 0), handler)
    srv.start()
    ports[name] = srv.server_port
s = FastHttpSession("http://127.0.0.1", env.events.request, None, network_timeout=0.5,
                    connection_timeout=0.5, max_retries=0)
for port in (int(sys.argv[1]), ports["silent"], ports["closed"], ports["status"],
             ports["wrong"]):
    with s.get(f"http://127.0.0.1:{port}/", catch_response=True) as resp:
        if getattr(resp, "error", None) is None and resp.status_code != 200:  # the locustfile's
            resp.failure(f"HTTP {resp.status_code}")
print(json.dumps([[type(e).__name__, of_exception(e), StatsError.parse_error(e)]
                  for e in seen]))
"""


def test_locusts_own_failures_get_the_same_kind_from_the_exception_and_its_csv_text() -> None:
    res = subprocess.run([sys.executable, "-c", LOCUST_PROBE, str(_closed_port())],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-2000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert [kind for _, kind, _ in seen] == ["connection_refused", "timeout",
                                             "connection_closed", "http_502", "http_204"]
    assert seen[1][0] == "RetriesExceeded"  # geventhttpclient wraps the timeout
    for _, kind, text in seen:  # Locust's failures CSV writes this text
        assert of_text(text) == kind, text


def test_failures_csv_rows_and_older_texts() -> None:
    assert of_text("CatchResponseError('HTTP 0')") == "no_response"  # before error kinds
    assert of_text("OSError(113, 'No route to host')") == "no_route_to_host"
    assert of_text("TimeoutError('timed out')") == "timeout"
    csv = ("Method,Name,Error,Occurrences\n"
           "GET,nodeport,\"ConnectionRefusedError(111, 'Connection refused')\",7\n"
           "GET,nodeport,LocustBadStatusCode(code=502),2\n"
           "GET,ingress,LocustBadStatusCode(code=502),5\n")
    assert parse_failures("nodeport", csv) == {"connection_refused": 7, "http_502": 2}


def test_error_rows_are_summed_over_workers() -> None:
    lines = [{"t": 10, "kind": "timeout", "count": 3, "worker": "a"},
             {"t": 10, "kind": "timeout", "count": 2, "worker": "b"},
             {"t": 9, "kind": "connection_refused", "count": 1, "worker": "a"},
             {"t": 11, "kind": "timeout", "count": 4, "worker": "a"}]
    rows = parse_errors("\n".join(json.dumps(r) for r in lines) + "\n")
    assert rows == [{"t": 9, "kind": "connection_refused", "count": 1},
                    {"t": 10, "kind": "timeout", "count": 5},
                    {"t": 11, "kind": "timeout", "count": 4}]
    assert list(totals(rows).items()) == [("timeout", 9), ("connection_refused", 1)]
