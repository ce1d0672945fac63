"""The one place the edge reads the service proxy's registry in etcd (ClusterIPs it allocated)."""

from __future__ import annotations

import base64
import json
from typing import Any

from testbed.cluster import model
from testbed.provider.base import Provider

SERVICES_PREFIX = "/testbed/services/"


def cluster_ips(provider: Provider, cluster: str) -> dict[str, str]:
    """Service name -> ClusterIP, as the service proxy registered them; {} when it has none.

    Read straight from etcd with etcdctl in the datastore container (no client library on the
    host). Values are the proxy's JSON service records; a record without a ClusterIP (or a
    registry that is not there yet) simply yields nothing, and the ingress then routes to the
    ready endpoints instead.
    """
    res = provider.exec(model.etcd_name(cluster),
                        ["etcdctl", "get", "--prefix", SERVICES_PREFIX, "-w", "json"])
    if res.exit_code != 0 or not res.stdout.strip():
        return {}
    out: dict[str, str] = {}
    for kv in json.loads(res.stdout).get("kvs", []) or []:
        key = base64.b64decode(kv.get("key", "")).decode(errors="replace")
        try:
            record: Any = json.loads(base64.b64decode(kv.get("value", "")))
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        name = str(record.get("name") or key.rstrip("/").rsplit("/", 1)[-1])
        ip = record.get("clusterIP") or record.get("cluster_ip")
        if ip:
            out[name] = str(ip)
    return out
