"""Whether a pod created while a fault holds gets an address (IPAM and the CNI under fault)."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from typing import Any

from testbed.cluster import model
from testbed.cluster.agent import NodeAgent
from testbed.errors import TestbedError
from testbed.faults.spec import Fault
from testbed.load import resources
from testbed.provider.base import Provider

NODE_GONE = ("node-stop", "node-kill", "node-restart")


def _node(provider: Provider, cluster: str, fault: Fault) -> str:
    """The faulted node when it still runs (its CNI is what the fault hits), else a survivor."""
    running = {c.name for c in resources.running(provider, cluster, ("node",))}
    hit = [model.node_name(cluster, i) for i in fault.nodes]
    if fault.kind not in NODE_GONE:
        for name in hit:
            if name in running:
                return name
    rest = sorted(running - set(hit))
    if not rest:
        raise TestbedError("no running node to create a pod on")
    return rest[0]


class Probe:
    """One pod added in a thread while the fault holds, removed once the add returns."""

    def __init__(self, provider: Provider, cluster: str, fault: Fault) -> None:
        self.provider, self.cluster, self.fault = provider, cluster, fault
        self.result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._add, daemon=True, name="fault-new-pod")
        self.node = ""

    def start(self) -> Probe:
        """Begin the pod's creation now."""
        try:
            self.node = _node(self.provider, self.cluster, self.fault)
        except TestbedError as e:
            self.result = {"addressed": False, "error": str(e)}
            return self
        self._thread.start()
        return self

    def _add(self) -> None:
        agent = NodeAgent(self.provider, self.node)
        name = f"fault-pod-{secrets.token_hex(3)}"
        began = time.monotonic()
        try:
            rec = agent.pod_add(name, ["app=sleep"])
            ip = str(rec.get("ip") or "")
            self.result = {"addressed": bool(ip), "ip": ip}
        except TestbedError as e:
            self.result = {"addressed": False, "error": str(e)[-200:]}
        self.result["s"] = round(time.monotonic() - began, 2)
        with contextlib.suppress(TestbedError):
            agent.pod_del(name)

    def outcome(self) -> dict[str, Any]:
        """What happened while the fault held: an add still running counts as no address."""
        if self._thread.is_alive():
            return {"node": self.node, "addressed": False,
                    "error": "the CNI had not answered when the fault ended"}
        return {"node": self.node, **self.result}
