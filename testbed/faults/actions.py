"""Each fault kind's effect and the undo records it leaves (written before the effect)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from testbed import console
from testbed.cluster import model
from testbed.errors import ProviderError, StepError, UserError
from testbed.faults import nodes as node_ops
from testbed.faults.facts import CLUSTER_IF, Facts
from testbed.faults.spec import Fault

Undo = dict[str, Any]
Save = Callable[[list[Undo]], None]
UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 8, "kbps": 8e3, "mbps": 8e6,
         "gbps": 8e9}


def _sh(facts: Facts, container: str, script: str, what: str) -> str:
    res = facts.provider.exec(container, ["sh", "-c", script])
    if res.exit_code != 0:
        why = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
        raise StepError(f"{container}: {what} failed: {why}")
    return res.stdout


def chain(fid: str) -> str:
    """The raw-table chain holding one partition's DROP rules on a node."""
    return f"TESTBED-FAULT-{fid}"


def _drop_script(name: str, networks: list[str]) -> str:
    """Jepsen-style: drop both directions in raw PREROUTING/OUTPUT, before conntrack and
    before any CNI's own rules (felix's and flannel's live in later tables); one
    iptables-restore, so a partition takes effect in one step."""
    rules = ["*raw", f":{name} - [0:0]",
             *(f"-A {name} -{d} {net} -j DROP" for net in networks for d in ("s", "d")),
             f"-I PREROUTING 1 -j {name}", f"-I OUTPUT 1 -j {name}", "COMMIT", ""]
    return f"printf %s {shlex.quote(chr(10).join(rules))} | iptables-restore -w --noflush"


def _undrop_script(name: str) -> str:
    return "; ".join([f"iptables -w -t raw -D PREROUTING -j {name}",
                      f"iptables -w -t raw -D OUTPUT -j {name}",
                      f"iptables -w -t raw -F {name}", f"iptables -w -t raw -X {name}",
                      "true"])


def partition(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """Each side drops the other side's node addresses and pod networks."""
    sides = (fault.nodes, fault.others)
    nets = {i: [f"{facts.ip(i)}/32", *facts.pod_networks(i)] for s in sides for i in s}
    undo = [{"op": "sh", "container": facts.node(i), "script": _undrop_script(chain(fid))}
            for s in sides for i in s]
    save(undo)
    work = [(i, sorted({n for j in theirs for n in nets[j]}))
            for mine, theirs in (sides, sides[::-1]) for i in mine]
    with ThreadPoolExecutor(max_workers=len(work)) as pool:  # every node at once
        list(pool.map(lambda w: _sh(facts, facts.node(w[0]), _drop_script(chain(fid), w[1]),
                                    "the partition"), work))
    return undo


def burst_bytes(rate: str) -> int:
    """tbf's bucket: 20 ms of traffic at `rate`, at least 4 KiB (an MTU and then some)."""
    m = re.match(r"^([0-9.]+)([a-z]+)$", rate)
    if not m or m.group(2) not in UNITS:
        raise UserError(f"--rate {rate!r}; allowed: a tc rate such as 10mbit")
    return max(4096, int(float(m.group(1)) * UNITS[m.group(2)] / 8 / 50))


def rate(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """tbf as the root qdisc of the node's cluster interface (egress shaping)."""
    undo = [{"op": "sh", "container": facts.node(i),
             "script": f"tc qdisc del dev {CLUSTER_IF} root; true"} for i in fault.nodes]
    save(undo)
    for i in fault.nodes:
        _sh(facts, facts.node(i), f"tc qdisc replace dev {CLUSTER_IF} root tbf rate "
            f"{fault.rate} burst {burst_bytes(fault.rate)} latency 400ms", "tbf")
    return undo


def restore_script(routes: list[dict[str, Any]]) -> str:
    """`ip link set up`, then `ip route replace` of every route the link had (a link going
    down drops them, and neither the kernel nor flannel's host-gw puts them back)."""
    lines = [f"ip link set {CLUSTER_IF} up"]
    for r in routes:
        words = ["ip", "route", "replace", str(r.get("dst", "default"))]
        if r.get("gateway"):
            words += ["via", str(r["gateway"])]
        words += ["dev", CLUSTER_IF]
        for key, word in (("protocol", "proto"), ("scope", "scope"), ("prefsrc", "src"),
                          ("metric", "metric")):
            if r.get(key) not in (None, ""):
                words += [word, str(r[key])]
        if "onlink" in (r.get("flags") or []):
            words.append("onlink")
        lines.append(" ".join(shlex.quote(w) for w in words) + " 2>/dev/null")
    return "; ".join([*lines, "true"])


def link_down(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """The node's cluster interface down; its routes are recorded first."""
    undo = []
    for i in fault.nodes:
        node = facts.node(i)
        routes = json.loads(_sh(facts, node, f"ip -j route show dev {CLUSTER_IF}",
                                "reading routes") or "[]")
        undo.append({"op": "sh", "container": node, "script": restore_script(routes)})
    save(undo)
    for i in fault.nodes:
        _sh(facts, facts.node(i), f"ip link set {CLUSTER_IF} down", "link down")
    return undo


def cni_kill(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """SIGKILL the node's CNI daemon containers; undone by starting them again."""
    daemons = [c.name for i in fault.nodes for c in facts.cni_daemons(i)]
    if not daemons:
        raise StepError(f"no CNI daemon container on node {fault.nodes[0]}")
    undo = [{"op": "start", "container": d} for d in daemons]
    save(undo)
    for d in daemons:
        facts.provider.kill(d)
    return undo


def cni_restart(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """Restart each target node's CNI daemons, one node at a time, each ready before the next."""
    undo = [{"op": "start", "container": c.name} for i in fault.nodes
            for c in facts.cni_daemons(i)]
    save(undo)
    for i in fault.nodes:
        for c in facts.cni_daemons(i):
            facts.provider.restart(c.name)
        node_ops.wait_cni(facts, i)
    return undo


def etcd_stop(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """Stop etcd (its data stays in the container); undone by starting it."""
    name = model.etcd_name(facts.cluster)
    undo = [{"op": "start", "container": name}, {"op": "etcd-healthy"}]
    save(undo)
    facts.provider.stop(name)
    return undo


def node_down(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """Stop or SIGKILL the node and what shares its namespace (its CNI daemons die with it,
    as a real node's would); undone by starting it and re-creating its daemons and pods."""
    undo = [{"op": "recover-node", "index": i} for i in fault.nodes]
    save(undo)
    for i in fault.nodes:
        for c in [*facts.dependents(i), facts.nodes[i]]:
            if fault.kind == "node-kill":
                facts.provider.kill(c.name)
            else:
                facts.provider.stop(c.name)
    return undo


def node_restart(facts: Facts, fault: Fault, fid: str, save: Save) -> list[Undo]:
    """Restart the node container; its daemons and pods are re-created by the undo."""
    undo = [{"op": "recover-node", "index": i} for i in fault.nodes]
    save(undo)
    for i in fault.nodes:
        facts.provider.restart(facts.node(i))
    return undo


APPLY: dict[str, Callable[[Facts, Fault, str, Save], list[Undo]]] = {
    "node-stop": node_down, "node-kill": node_down, "node-restart": node_restart,
    "link-down": link_down, "partition": partition, "rate": rate, "cni-kill": cni_kill,
    "cni-restart": cni_restart, "cni-restart-all": cni_restart, "etcd-stop": etcd_stop,
}


def undo_one(facts: Facts, action: Undo) -> None:
    """Play one undo record; what is already undone (a removed chain) is fine."""
    op = action["op"]
    if op == "sh":
        facts.provider.exec(action["container"], ["sh", "-c", action["script"]])
    elif op == "start":
        running = {c.name for c in facts.provider.containers(cluster=facts.cluster)
                   if c.status == "running"}
        if action["container"] not in running:
            facts.provider.start(action["container"])
    elif op == "etcd-healthy":
        node_ops.wait_etcd(facts)
    elif op == "recover-node":
        node_ops.recover(facts, int(action["index"]))
    else:
        raise StepError(f"unknown undo record {op!r}")


def undo_all(facts: Facts, actions: list[Undo]) -> list[str]:
    """Play every undo record (in order); the errors, one line each, for the caller."""
    errors = []
    for action in actions:
        try:
            undo_one(facts, action)
        except (StepError, ProviderError) as e:
            errors.append(str(e))
            console.info(f"   ! undo {action['op']}: {e}")
    return errors
