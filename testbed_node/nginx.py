"""The pods' fast HTTP workload: nginx (Debian's) answering the identity from its config.

`python3 -m testbed_node.workload --server nginx` writes one configuration per container and
execs nginx in its place (the container's pid stays the same). nginx answers `GET /` with the
same identity JSON as the Python server (pod, node, ip, container, port, client), `/healthz`
with 200, keeps connections alive, and logs nothing on the request path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RUN_DIR = Path("/run/testbed/workload")
NGINX = "nginx"


def _quote(text: str) -> str:
    """A value safe inside an nginx single-quoted string."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def render(pod: str, node: str, container: str, port: int, ip: str, run_dir: Path) -> str:
    """nginx.conf for one workload container: one worker, keep-alive, identity on `/`."""
    # "$server_addr" when the pod's address is not known: nginx fills in the local address.
    body = json.dumps({"pod": pod, "node": node, "ip": ip or "$server_addr",
                       "container": container, "port": port, "client": "$remote_addr",
                       "server": "nginx"})
    tmp = run_dir / f"{pod}-{container}"
    return f"""daemon off;
worker_processes 1;
pid {tmp}.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {tmp}.body;
    proxy_temp_path {tmp}.proxy;
    fastcgi_temp_path {tmp}.fcgi;
    uwsgi_temp_path {tmp}.uwsgi;
    scgi_temp_path {tmp}.scgi;
    server {{
        listen {port} backlog=4096;
        location = / {{
            default_type application/json;
            return 200 '{_quote(body)}';
        }}
        location = /healthz {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
        location / {{
            default_type text/plain;
            return 404 "not found\\n";
        }}
    }}
}}
"""


def exec_nginx(pod: str, node: str, container: str, port: int, ip: str,
               run_dir: Path = RUN_DIR) -> None:
    """Write the configuration and become nginx (never returns)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / f"{pod}-{container}.conf"
    conf.write_text(render(pod, node, container, port, ip, run_dir))
    os.execvp(NGINX, [NGINX, "-c", str(conf), "-e", "stderr"])
