"""The ingress controller: routes from the scenario's ingress rules, rendered as nginx config.

nginx is the engine ingress-nginx runs, and the config follows its shape: one `server` per
host (`server_name`), one `location` per path prefix, an `upstream` per service port, and a
default server answering 404 for any host no rule names. Each upstream is the service's
ClusterIP (the service proxy's OUTPUT-chain rules on the edge node DNAT it to a ready pod,
as ingress-nginx's `service-upstream` does) or, where the proxy registered no ClusterIP, the
service's ready endpoints directly (ingress-nginx's default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from testbed.edge.names import INGRESS_HTTP_PORT
from testbed.scenario import Scenario


@dataclass(frozen=True)
class Route:
    """One host + path prefix and where nginx sends it."""

    host: str
    path: str
    service: str
    port: int
    upstream: tuple[str, ...]  # "ip:port" entries; empty: no backend, nginx answers 503
    via: str  # "clusterIP", "endpoints" or "none"

    @property
    def upstream_name(self) -> str:
        """ingress-nginx names upstreams <namespace>-<service>-<port>."""
        return f"default-{self.service}-{self.port}"


def selects(scenario: Scenario) -> dict[str, list[str]]:
    """Service -> the deployments its selector matches (their pods are its backends)."""
    return {s.name: [d.name for d in scenario.deployments
                     if all(d.pod_labels.get(k) == v for k, v in s.selector.items())]
            for s in scenario.services}


def endpoints(scenario: Scenario, pods: Iterable[Mapping[str, Any]]
              ) -> dict[tuple[str, int], list[str]]:
    """(service, port) -> "podIP:targetPort" of every running pod the service selects."""
    running = {str(p["name"]): str(p.get("ip") or "").split("/")[0] for p in pods}
    deployment_of = {name: dep.name for name, _, dep in scenario.pods()}
    chosen = selects(scenario)
    out: dict[tuple[str, int], list[str]] = {}
    for svc in scenario.services:
        ips = sorted(ip for pod, ip in running.items()
                     if ip and deployment_of.get(pod) in chosen[svc.name])
        for sp in svc.ports:
            out[(svc.name, sp.port)] = [f"{ip}:{sp.target}" for ip in ips]
    return out


def routes(scenario: Scenario, cluster_ips: Mapping[str, str],
           ready: Mapping[tuple[str, int], list[str]]) -> list[Route]:
    """Every (host, path) of the scenario's ingress rules, first rule winning on duplicates."""
    out: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for rule in scenario.ingress:
        for p in rule.paths:
            path = p.path.rstrip("/") or "/"
            if (rule.host, path) in seen:
                continue
            seen.add((rule.host, path))
            upstream: tuple[str, ...]
            if p.service in cluster_ips:
                upstream, via = (f"{cluster_ips[p.service]}:{p.port}",), "clusterIP"
            else:
                upstream = tuple(ready.get((p.service, p.port), []))
                via = "endpoints" if upstream else "none"
            out.append(Route(rule.host, path, p.service, p.port, upstream, via))
    return out


def _locations(route: Route) -> list[str]:
    # Prefix semantics of networking.k8s.io/v1 (pathType Prefix): /api matches /api and
    # /api/..., never /apix. The matched prefix is replaced by "/" on the way to the backend
    # (ingress-nginx's rewrite-target: /), so every path reaches the workload's own "/".
    target = (f"proxy_pass http://{route.upstream_name}/;" if route.upstream
              else "return 503;")
    if route.path == "/":
        return [f"location / {{ {target} }}"]
    return [f"location = {route.path} {{ {target} }}",
            f"location {route.path}/ {{ {target} }}"]


def render(all_routes: Iterable[Route]) -> str:
    """The whole nginx.conf for these routes."""
    all_routes = list(all_routes)
    lines = [
        "# Rendered by testbed.edge.ingress from the scenario's ingress rules.",
        "worker_processes auto;",
        "pid /run/nginx.pid;",
        "error_log stderr warn;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        "    server_tokens off;",
        "    keepalive_requests 10000;",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_connect_timeout 5s;",
        "    proxy_read_timeout 60s;",
    ]
    upstreams: dict[str, Route] = {}
    for r in all_routes:
        if r.upstream:
            upstreams.setdefault(r.upstream_name, r)
    for name, r in upstreams.items():
        lines.append(f"    upstream {name} {{")
        lines += [f"        server {s};" for s in r.upstream]
        # Idle connections are reused only towards endpoints (nginx balances per request).
        # Towards a ClusterIP the service proxy picks a pod per connection: reusing one
        # would pin every request of a worker to the same pod.
        if r.via == "endpoints":
            lines.append("        keepalive 32;")
        lines.append("    }")
    lines += [
        "    server {",
        f"        listen {INGRESS_HTTP_PORT} default_server reuseport;",
        "        server_name _;",
        "        location / { return 404; }",
        "    }",
    ]
    hosts: dict[str, list[Route]] = {}
    for r in all_routes:
        hosts.setdefault(r.host, []).append(r)
    for host, rs in hosts.items():
        lines += ["    server {", f"        listen {INGRESS_HTTP_PORT};",
                  f"        server_name {host};"]
        for r in rs:
            lines += [f"        {loc}" for loc in _locations(r)]
        if not any(r.path == "/" for r in rs):
            lines.append("        location / { return 404; }")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def describe(all_routes: Iterable[Route], scenario: Scenario) -> str:
    """The JSON kept in a label on the ingress container: routes, and every service's
    backends (deployments) and NodePorts, so `check` knows what each path must reach."""
    chosen = selects(scenario)
    services = {s.name: {"deployments": chosen[s.name],
                         "nodePorts": [p.node_port for p in s.ports if p.node_port]}
                for s in scenario.services}
    return json.dumps({"routes": [asdict(r) for r in all_routes], "services": services},
                      sort_keys=True, separators=(",", ":"))
