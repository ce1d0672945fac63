"""Fault kinds, targets and durations as users write them, validated with one-line errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from testbed.errors import UserError

# kind -> what it does (the help text and the error messages list these).
KINDS: dict[str, str] = {
    "node-stop": "stop a node container (its pods with it); undone: started, pods re-created",
    "node-kill": "SIGKILL a node container; undone as node-stop",
    "node-restart": "restart a node container, then re-create its CNI daemons and pods",
    "link-down": "the node's cluster interface (eth0) down; undone: up, its routes restored",
    "partition": "SIDE_A:SIDE_B cannot reach each other (packet filters in the nodes' own "
                 "namespaces on the other side's node IPs and pod CIDRs)",
    "rate": "shape the node's cluster interface with tbf (--rate, e.g. 10mbit)",
    "cni-kill": "SIGKILL one node's CNI daemon container (flanneld, calico-node); undone: started",
    "cni-restart": "restart one node's CNI daemon container",
    "cni-restart-all": "restart every node's CNI daemons, one node at a time (rolling)",
    "etcd-stop": "stop the datastore (etcd); undone: started",
}
# Kinds whose fault is one action (no window to hold): `--for` does not apply.
INSTANT = ("node-restart", "cni-restart", "cni-restart-all")
REFUSED: dict[str, str] = {
    "delay": "this kernel has no netem (sch_netem), so delay cannot be emulated",
    "loss": "this kernel has no netem (sch_netem), so loss cannot be emulated",
}
RATE_RE = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?)(ms|s|m)?$")
TARGETS_HELP = ("a node number or name (2, node-2), `etcd` for etcd-stop, `all` for "
                "cni-restart-all, or for partition SIDE_A:SIDE_B with comma lists (1,2:3); "
                "one side alone (3) means it against every other node")


@dataclass(frozen=True)
class Fault:
    """One fault to inject: its kind, the nodes on each side, and its knobs."""

    kind: str
    nodes: tuple[int, ...] = ()  # the target nodes (side A of a partition)
    others: tuple[int, ...] = ()  # side B of a partition
    rate: str = ""
    for_s: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """e.g. `partition 1,2:3`, `node-kill 2`, `etcd-stop etcd`."""
        if self.kind == "etcd-stop":
            return "etcd-stop etcd"
        if self.kind == "cni-restart-all":
            return "cni-restart-all all"
        side = ",".join(map(str, self.nodes))
        if self.kind == "partition":
            return f"partition {side}:{','.join(map(str, self.others))}"
        return f"{self.kind} {side}" + (f" {self.rate}" if self.rate else "")


def check_kind(kind: str) -> str:
    """A known kind, or one line saying why not (delay and loss: no netem here)."""
    if kind in REFUSED:
        raise UserError(f"fault kind {kind}: {REFUSED[kind]}; allowed: {', '.join(KINDS)}")
    if kind not in KINDS:
        raise UserError(f"fault kind {kind!r} is unknown; allowed: {', '.join(KINDS)}")
    return kind


def parse_duration(value: str | float | int, what: str = "--for") -> float:
    """`15`, `15s`, `500ms`, `2m` -> seconds (> 0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = DURATION_RE.match(str(value).strip())
        if not m:
            raise UserError(f"{what} {value!r} is not a duration; allowed: seconds such as 15, "
                            "15s, 500ms or 2m")
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(3)]
    if not 0 < seconds <= 24 * 3600:
        raise UserError(f"{what} {value!r} is out of range; allowed: more than 0 and at most "
                        "24h")
    return seconds


def node_index(token: str, cluster: str, count: int) -> int:
    """`2`, `node-2` or `<cluster>-node-2` -> 2, within 1..count."""
    t = token.strip()
    for prefix in (f"{cluster}-node-", "node-"):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    if not t.isdigit() or not 1 <= int(t) <= count:
        raise UserError(f"fault target {token.strip()!r} is not a node of {cluster}; allowed: "
                        f"1 to {count} (or node-N), {TARGETS_HELP}")
    return int(t)


def _side(text: str, cluster: str, count: int) -> tuple[int, ...]:
    nodes = tuple(sorted({node_index(t, cluster, count) for t in text.split(",") if t.strip()}))
    if not nodes:
        raise UserError(f"fault target {text!r} names no node; allowed: {TARGETS_HELP}")
    return nodes


def parse_target(kind: str, target: str, cluster: str, count: int) -> tuple[tuple[int, ...],
                                                                            tuple[int, ...]]:
    """(nodes, other side) of a fault's TARGET for `kind` on a cluster of `count` nodes."""
    target = target.strip()
    if kind == "etcd-stop":
        if target not in ("etcd", "datastore"):
            raise UserError(f"fault target {target!r} for etcd-stop; allowed: etcd")
        return (), ()
    if kind == "cni-restart-all":
        if target not in ("all", "*", ""):
            raise UserError(f"fault target {target!r} for cni-restart-all; allowed: all")
        return tuple(range(1, count + 1)), ()
    if kind != "partition":
        if "," in target or ":" in target:
            raise UserError(f"fault target {target!r}: {kind} takes one node; allowed: "
                            f"1 to {count} (or node-N)")
        return (node_index(target, cluster, count),), ()
    left, sep, right = target.partition(":")
    a = _side(left, cluster, count)
    b = _side(right, cluster, count) if sep else tuple(i for i in range(1, count + 1)
                                                        if i not in a)
    if not b or set(a) & set(b):
        raise UserError(f"partition {target!r}: the two sides must be non-empty and share no "
                        f"node; allowed: {TARGETS_HELP}")
    return a, b


def build(kind: str, target: str, cluster: str, count: int, for_s: float | None = None,
          rate: str = "") -> Fault:
    """A validated fault from the command line's (or a timeline's) words."""
    check_kind(kind)
    if for_s is not None and kind in INSTANT:
        raise UserError(f"--for: {kind} is a single action with no window to hold; allowed: "
                        f"--for with {', '.join(k for k in KINDS if k not in INSTANT)}")
    if kind == "rate":
        if not RATE_RE.match(rate or ""):
            raise UserError(f"--rate {rate!r} for the rate fault; allowed: a tc rate such as "
                            "10mbit, 500kbit or 1gbit")
    elif rate:
        raise UserError("--rate goes with the rate fault only; allowed: --rate with rate")
    nodes, others = parse_target(kind, target, cluster, count)
    return Fault(kind=kind, nodes=nodes, others=others, rate=rate, for_s=for_s)
