"""Short stable names for why a request failed (`http_502`, `timeout`, `connection_refused`...).

The locustfile names each failed request with `of_exception`; the host names the rows of Locust's
failures CSV (the exception's repr, no timestamps) with `of_text`. The names are those of the
open-loop sweeps' `errors` ({kind: count}, testbed/load/openloop.py).
"""

from __future__ import annotations

import errno
import re

BY_ERRNO = {
    errno.ECONNREFUSED: "connection_refused", errno.ECONNRESET: "connection_reset",
    errno.EHOSTUNREACH: "no_route_to_host", errno.ENETUNREACH: "network_unreachable",
    errno.ETIMEDOUT: "timeout", errno.EPIPE: "broken_pipe",
    errno.ECONNABORTED: "connection_aborted",
}
# Exceptions without an errno: the stdlib's (socket.timeout is TimeoutError), gevent's
# Timeout, geventhttpclient's closed connection.
BY_CLASS = {
    "TimeoutError": "timeout", "timeout": "timeout", "Timeout": "timeout",
    "ConnectionRefusedError": "connection_refused", "ConnectionResetError": "connection_reset",
    "BrokenPipeError": "broken_pipe", "ConnectionAbortedError": "connection_aborted",
    "HTTPConnectionClosed": "connection_closed",
}
# A bare message (what a wrapper's repr keeps of the error inside it).
BY_MESSAGE = (("timed out", "timeout"), ("connection refused", "connection_refused"),
              ("connection reset", "connection_reset"), ("no route to host", "no_route_to_host"),
              ("network is unreachable", "network_unreachable"),
              ("connection closed", "connection_closed"))
# Locust's `HTTP 502` failures and geventhttpclient's BadStatusCode(code=502).
_HTTP = re.compile(r"\bHTTP (\d+)\b|\bcode=(\d+)\b")
_REPR = re.compile(r"^\s*(\w+)\((.*)\)\s*$", re.S)
_LEADING_INT = re.compile(r"^\s*(?:\[Errno\s+)?(\d+)\b")
_ORIGINAL = re.compile(r"\boriginal=(.*)$", re.S)


def _http(code: str) -> str:
    # status 0: no HTTP answer (what the locustfile wrote for a transport error before)
    return "no_response" if code == "0" else f"http_{code}"


def _named(name: str, code: int | None, message: str) -> str:
    if code in BY_ERRNO:
        return BY_ERRNO[code]
    if code is None and (m := _HTTP.search(message)):
        return _http(m.group(1) or m.group(2))
    if name in BY_CLASS:
        return BY_CLASS[name]
    if code is not None and code in errno.errorcode:
        return errno.errorcode[code]
    if not name:
        low = message.lower()
        return next((kind for key, kind in BY_MESSAGE if key in low), message.strip()[:40]
                    or "unknown")
    return name


def of_exception(exc: BaseException) -> str:
    """The kind of a failed request's exception: a retry wrapper's (geventhttpclient's
    RetriesExceeded around a timeout) is its original error's, a bad status `http_<code>`."""
    inner = getattr(exc, "original", None)
    if isinstance(inner, BaseException):
        return of_exception(inner)
    status = getattr(exc, "code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return _http(str(status))
    code = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError) and code not in BY_ERRNO:
        return "timeout"
    return _named(type(exc).__name__, code if isinstance(code, int) else None, str(exc))


def of_text(text: str) -> str:
    """The kind from an exception's repr as Locust's failures CSV writes it
    (`ConnectionRefusedError(111, 'Connection refused')`, `LocustBadStatusCode(code=502)`)."""
    m = _REPR.match(text)
    name, args = (m.group(1), m.group(2)) if m else ("", text)
    if (inner := _ORIGINAL.search(args)) is not None:
        return of_text(inner.group(1))
    code = _LEADING_INT.match(args)
    return _named(name, int(code.group(1)) if code else None, args)
