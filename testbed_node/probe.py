"""HTTP probe run inside a pod's netns: N timed requests, per-sample latency and the median;
or a batch of such probes to several destinations at once (`--batch JSON`)."""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from testbed_contract.agent import ProbeReply, ProbeSample, ProbeTarget

MAX_BODY = 64 * 1024
# Destinations of one batch probed at once: a 10-node matrix's source has about 10 of them.
BATCH_WORKERS = 16


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


def probe_many(targets: list[ProbeTarget], workers: int = BATCH_WORKERS) -> list[ProbeReply]:
    """Probe every target, up to `workers` at once; the replies in the targets' order."""
    if not targets:
        return []

    def one(t: ProbeTarget) -> ProbeReply:
        return probe(t["url"], t["count"], t["timeout"], headers=t.get("headers"))

    with ThreadPoolExecutor(max(1, min(workers, len(targets))), "probe") as pool:
        return list(pool.map(one, targets))


def batch_limit(targets: list[ProbeTarget], workers: int = BATCH_WORKERS) -> float:
    """Seconds a batch may take at worst: its waves of `workers`, each its slowest target."""
    worst = max((t["count"] * (t["timeout"] + 1) for t in targets), default=0.0)
    return -(-len(targets) // workers) * worst


def parse_targets(text: str) -> list[ProbeTarget]:
    """A batch as JSON, `[{"url": U, "count": N, "timeout": S, "headers": {..}}, ...]`, checked
    (count defaults to 3, timeout to 3 s, headers to none)."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("a batch is a JSON list of targets")
    targets = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ValueError(f"target {i}: an object with a url")
        count, timeout = item.get("count", 3), item.get("timeout", 3.0)
        headers = item.get("headers") or {}
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"target {i}: count must be a positive integer, got {count!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise ValueError(f"target {i}: timeout must be seconds >= 0, got {timeout!r}")
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ValueError(f"target {i}: headers must map names to strings")
        targets.append(ProbeTarget(url=item["url"], count=count, timeout=float(timeout),
                                   headers=headers))
    return targets


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
    """`python3 -m testbed_node.probe URL [--count N] [--timeout S]`: print the JSON report;
    `... --batch JSON` (`-`: read it from stdin): print the list of reports, in order."""
    ap = argparse.ArgumentParser(prog="testbed_node.probe", description=__doc__)
    ap.add_argument("url", nargs="?")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    ap.add_argument("--batch", metavar="JSON", help='[{"url", "count", "timeout", "headers"}, '
                    '...] probed concurrently, instead of URL ("-": from stdin)')
    args = ap.parse_args(argv)
    if (args.url is None) == (args.batch is None):
        ap.error("give a URL or --batch JSON, not both")
    if args.batch is not None:
        try:
            targets = parse_targets(sys.stdin.read() if args.batch == "-" else args.batch)
        except ValueError as e:
            ap.error(f"--batch: {e}")
        print(json.dumps(probe_many(targets)))
        return 0
    print(json.dumps(probe(args.url, args.count, args.timeout, args.interval,
                           parse_headers(args.header))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
