"""HTTP probe run inside a pod's netns: N timed requests, per-sample latency and the median."""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from testbed_contract.agent import ProbeReply, ProbeSample

MAX_BODY = 64 * 1024


def _parse_body(raw: bytes) -> Any:
    text = raw[:MAX_BODY].decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def request(url: str, timeout: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One GET: ok (2xx), status, body (JSON when it parses), latency_ms, error."""
    parts = urlsplit(url)
    sample: dict[str, Any] = {"ok": False, "status": None, "body": None, "latency_ms": None,
                              "error": ""}
    if parts.scheme != "http" or not parts.hostname:
        sample["error"] = f"unsupported URL {url!r} (only http://HOST[:PORT]/PATH)"
        return sample
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "testbed-probe",
                                           **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        sample["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
        sample["status"] = resp.status
        sample["body"] = _parse_body(raw)
        sample["ok"] = 200 <= resp.status < 300
        if not sample["ok"]:
            sample["error"] = f"HTTP {resp.status} {resp.reason}"
    except (OSError, http.client.HTTPException) as e:
        sample["error"] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        conn.close()
    return sample


def _who(body: Any) -> tuple[str | None, str | None]:
    """Which pod answered one sample and the source address it saw (workload bodies)."""
    if not isinstance(body, dict):
        return None, None
    return body.get("pod"), body.get("client")


def probe(url: str, count: int = 3, timeout: float = 3.0, interval: float = 0.0,
          headers: dict[str, str] | None = None) -> ProbeReply:
    """`count` requests; ok when all succeed; latency_ms is the median of successful ones."""
    samples = []
    for i in range(max(1, count)):
        if i and interval:
            time.sleep(interval)
        samples.append(request(url, timeout, headers))
    good = [s for s in samples if s["ok"]]
    last = good[-1] if good else samples[-1]
    errors = [s["error"] for s in samples if s["error"]]
    return {
        "ok": len(good) == len(samples),
        "status": last["status"],
        "body": last["body"],
        "latency_ms": round(statistics.median(s["latency_ms"] for s in good), 3) if good else None,
        "samples": [ProbeSample(ok=s["ok"], status=s["status"], latency_ms=s["latency_ms"],
                                error=s["error"], pod=who[0], client=who[1])
                    for s in samples for who in [_who(s["body"])]],
        "error": errors[0] if errors else "",
        "url": url,
        "count": len(samples),
        "failures": len(samples) - len(good),
    }


def parse_headers(items: list[str]) -> dict[str, str]:
    """`['Host: a.b']` -> `{'Host': 'a.b'}`."""
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"bad header {item!r}: use 'Name: value'")
        out[name.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    """`python3 -m testbed_node.probe URL [--count N] [--timeout S]`: print the JSON report."""
    ap = argparse.ArgumentParser(prog="testbed_node.probe", description=__doc__)
    ap.add_argument("url")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    args = ap.parse_args(argv)
    print(json.dumps(probe(args.url, args.count, args.timeout, args.interval,
                           parse_headers(args.header))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
