"""Felix's iptables and ipset rendering (felix/rules), as pure data for one node.

Chains keep felix's names and shape: FORWARD -> cali-FORWARD -> cali-from-wl-dispatch /
cali-to-wl-dispatch -> cali-fw-<iface> / cali-tw-<iface> (conntrack, policies in order,
then profiles: cali-pri-/cali-pro-<profile>, cali-pi-/cali-po-<policy>), INPUT -> cali-INPUT
-> cali-wl-to-host (DefaultEndpointToHostAction), a mark 0x10000 for "accepted" that
FORWARD turns into ACCEPT, and nat POSTROUTING -> cali-POSTROUTING -> cali-nat-outgoing
(MASQUERADE pool traffic leaving all pools, by ipsets cali40masq-ipam-pools and
cali40all-ipam-pools). Selectors in rules become hash:net ipsets `cali40s:<hash>`.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from testbed.reference.calico import selector

MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MAX_CHAIN = 28
ALL_POOLS = "cali40all-ipam-pools"
MASQ_POOLS = "cali40masq-ipam-pools"
VXLAN_NET = "cali40all-vxlan-net"
NAMESPACE_LABEL = "projectcalico.org/namespace"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "ICMP": "icmp", "SCTP": "sctp", "UDPLite": "udplite"}
PORT_PROTOCOLS = {"tcp", "udp", "sctp", "udplite", "6", "17", "132", "136"}

# Hook rules felix keeps in the kernel's own chains (comment ids as felix renders them).
HOOKS: tuple[tuple[str, str, str, list[str]], ...] = (
    ("filter", "FORWARD", "insert",
     ["-m", "comment", "--comment", "cali:wUHhoiAYhphO9Mso", "-j", "cali-FORWARD"]),
    ("filter", "INPUT", "insert",
     ["-m", "comment", "--comment", "cali:Cz_u1IQiXIMmKD4c", "-j", "cali-INPUT"]),
    ("filter", "FORWARD", "append",
     ["-m", "comment", "--comment", "cali:S93hcgKJrXEqnTfs", "-m", "comment", "--comment",
      "Policy explicitly accepted packet.", "-m", "mark", "--mark",
      f"{MARK_ACCEPT:#x}/{MARK_ACCEPT:#x}", "-j", "ACCEPT"]),
    ("nat", "POSTROUTING", "insert",
     ["-m", "comment", "--comment", "cali:O3lYWMrLQYEMJtB5", "-j", "cali-POSTROUTING"]),
)


def short_hash(text: str, length: int) -> str:
    """A URL-safe hash of text, cut to length (hashutils.GetLengthLimitedID-like)."""
    digest = hashlib.sha256(text.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:length]


def chain_name(prefix: str, name: str) -> str:
    """prefix+name when it fits iptables' 28 characters, else prefix+'_'+hash."""
    if len(prefix) + len(name) <= MAX_CHAIN:
        return prefix + name
    return prefix + "_" + short_hash(name, MAX_CHAIN - len(prefix) - 1)


def selector_set(sel: str) -> str:
    """The ipset for a selector's matching endpoint addresses (`cali40s:` + 22 chars)."""
    return "cali40s:" + short_hash(sel, 22)


def nets_set(nets: list[str]) -> str:
    """The ipset for a rule's list of CIDRs."""
    return "cali40n:" + short_hash(",".join(sorted(nets)), 22)


@dataclass(frozen=True)
class Endpoint:
    """A workload endpoint as felix's calculation graph sees it (labels already inherited)."""

    name: str
    namespace: str
    node: str
    iface: str
    ips: tuple[str, ...]
    labels: dict[str, str]
    profiles: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """A NetworkPolicy (namespace set) or GlobalNetworkPolicy (namespace empty)."""

    name: str
    namespace: str
    order: float | None
    selector: str
    types: tuple[str, ...]
    ingress: tuple[dict[str, Any], ...]
    egress: tuple[dict[str, Any], ...]

    @classmethod
    def from_resource(cls, res: dict[str, Any]) -> Policy:
        """Read a stored (Global)NetworkPolicy, defaulting types as the API does."""
        spec = res.get("spec", {})
        ingress = tuple(spec.get("ingress") or ())
        egress = tuple(spec.get("egress") or ())
        types = tuple(spec.get("types") or (["Ingress"] + (["Egress"] if egress else [])))
        order = spec.get("order")
        return cls(name=res["metadata"]["name"],
                   namespace=res["metadata"].get("namespace", "") if res.get("kind") ==
                   "NetworkPolicy" else "",
                   order=float(order) if order is not None else None,
                   selector=spec.get("selector", "all()"), types=types,
                   ingress=ingress, egress=egress)

    @property
    def key(self) -> str:
        """Unique id (namespace/name, or name for global policies)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def applies_to(self, ep: Endpoint) -> bool:
        """Namespaced policies select endpoints of their own namespace only."""
        if self.namespace and self.namespace != ep.namespace:
            return False
        return selector.matches(self.selector, ep.labels)


def sort_policies(policies: list[Policy]) -> list[Policy]:
    """Felix's order: by `order` (unset last), then by name."""
    return sorted(policies, key=lambda p: (p.order is None, p.order or 0.0, p.key))


@dataclass
class Ruleset:
    """Everything felix programs into iptables and ipset for one node."""

    ipsets: dict[str, set[str]] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)  # table -> chain names
    rules: dict[str, list[str]] = field(default_factory=dict)   # table -> "-A ..." lines

    def chain(self, table: str, name: str) -> str:
        """Declare a chain (once) and return its name."""
        names = self.chains.setdefault(table, [])
        if name not in names:
            names.append(name)
        self.rules.setdefault(table, [])
        return name

    def add(self, table: str, chain: str, *parts: str) -> None:
        """Append one rule."""
        self.rules.setdefault(table, []).append(" ".join(["-A", chain, *parts]))


class RuleRenderer:
    """Turns Calico rules into iptables matches, collecting the ipsets they need."""

    def __init__(self, ruleset: Ruleset, endpoints: list[Endpoint]) -> None:
        self.rs = ruleset
        self.endpoints = endpoints

    def _selector_set(self, sel: str) -> str:
        name = selector_set(sel)
        if name not in self.rs.ipsets:
            match = selector.parse(sel)
            self.rs.ipsets[name] = {f"{ip.split('/')[0]}/32" for ep in self.endpoints
                                    if match(ep.labels) for ip in ep.ips}
        return name

    def _entity(self, entity: dict[str, Any], direction: str, namespace: str) -> list[str]:
        """Match parts for a rule's source or destination."""
        side = "src" if direction == "source" else "dst"
        flag = "-s" if side == "src" else "-d"
        parts: list[str] = []
        for key, negate in (("nets", False), ("notNets", True)):
            nets = [str(ipaddress.ip_network(n, strict=False)) for n in entity.get(key) or []]
            if len(nets) == 1:
                parts += (["!"] if negate else []) + [flag, nets[0]]
            elif nets:
                name = nets_set(nets)
                self.rs.ipsets[name] = set(nets)
                parts += ["-m", "set"] + (["!"] if negate else []) + ["--match-set", name, side]
        for key, negate in (("selector", False), ("notSelector", True)):
            sel = entity.get(key)
            if not sel:
                continue
            scope = self._namespace_scope(entity, namespace)
            full = f"({sel}) && {scope}" if scope else sel
            parts += ["-m", "set"] + (["!"] if negate else []) + [
                "--match-set", self._selector_set(full), side]
        if entity.get("namespaceSelector") and not entity.get("selector") and namespace:
            scope = self._namespace_scope(entity, namespace)
            parts += ["-m", "set", "--match-set", self._selector_set(scope), side]
        return parts

    @staticmethod
    def _namespace_scope(entity: dict[str, Any], namespace: str) -> str:
        """Rule selectors of a namespaced policy stay inside its namespace unless a
        namespaceSelector widens them (namespaces carry only their name as a label here)."""
        ns_sel = entity.get("namespaceSelector")
        if ns_sel is None:
            return f"{NAMESPACE_LABEL} == '{namespace}'" if namespace else ""
        if ns_sel.strip() in ("all()", "global()"):
            return ""
        return f"{NAMESPACE_LABEL} in {{{_ns_values(ns_sel)}}}"

    @staticmethod
    def _ports(entity: dict[str, Any], side: str) -> list[str]:
        parts: list[str] = []
        for key, negate in (("ports", False), ("notPorts", True)):
            ports = [str(p).replace("-", ":") for p in entity.get(key) or []]
            if ports:
                parts += ["-m", "multiport"] + (["!"] if negate else []) + [
                    f"--{side}ports", ",".join(ports)]
        return parts

    def render(self, table: str, chain: str, rule: dict[str, Any], namespace: str) -> None:
        """Append the iptables rules for one Calico rule to chain."""
        src = rule.get("source") or {}
        dst = rule.get("destination") or {}
        if any(not str(p).replace("-", "").isdigit()
               for e in (src, dst) for k in ("ports", "notPorts") for p in e.get(k) or []):
            return  # named ports need pod port metadata the cni orchestrator never has
        if rule.get("ipVersion") == 6:
            return
        match: list[str] = []
        proto = rule.get("protocol")
        if proto is not None:
            match += ["-p", PROTOCOLS.get(str(proto), str(proto).lower())]
        if rule.get("notProtocol") is not None:
            np = rule["notProtocol"]
            match += ["!", "-p", PROTOCOLS.get(str(np), str(np).lower())]
        icmp = rule.get("icmp")
        if icmp and icmp.get("type") is not None:
            code = f"/{icmp['code']}" if icmp.get("code") is not None else ""
            match += ["-m", "icmp", "--icmp-type", f"{icmp['type']}{code}"]
        match += self._entity(src, "source", namespace) + self._ports(src, "s")
        match += self._entity(dst, "destination", namespace) + self._ports(dst, "d")
        action = rule.get("action", "Allow")
        if action == "Allow":
            self.rs.add(table, chain, *match, "-j", "MARK", "--set-xmark",
                        f"{MARK_ACCEPT:#x}/{MARK_ACCEPT:#x}")
            self.rs.add(table, chain, "-m", "mark", "--mark", f"{MARK_ACCEPT:#x}/{MARK_ACCEPT:#x}",
                        "-j", "RETURN")
        elif action == "Deny":
            self.rs.add(table, chain, *match, "-j", "DROP")
        elif action == "Pass":
            self.rs.add(table, chain, *match, "-j", "MARK", "--set-xmark",
                        f"{MARK_PASS:#x}/{MARK_PASS:#x}")
            self.rs.add(table, chain, "-m", "mark", "--mark", f"{MARK_PASS:#x}/{MARK_PASS:#x}",
                        "-j", "RETURN")
        elif action == "Log":
            self.rs.add(table, chain, *match, "-j", "LOG", "--log-prefix", '"calico-packet: "',
                        "--log-level", "5")


def _ns_values(ns_selector: str) -> str:
    """`projectcalico.org/name == 'x'` style namespace selectors -> a value list."""
    names = re.findall(r"'([^']*)'|\"([^\"]*)\"", ns_selector)
    return ",".join(f"'{a or b}'" for a, b in names) or "''"


def build(*, local: list[Endpoint], all_endpoints: list[Endpoint],
          profiles: dict[str, dict[str, Any]], policies: list[Policy],
          pools: list[tuple[str, bool]], vxlan: bool, vxlan_port: int,
          vxlan_peers: list[str], to_host_action: str) -> Ruleset:
    """The whole ruleset for a node: local endpoints, the profiles and policies they use."""
    rs = Ruleset()
    rr = RuleRenderer(rs, all_endpoints)
    rs.ipsets[ALL_POOLS] = {cidr for cidr, _ in pools}
    rs.ipsets[MASQ_POOLS] = {cidr for cidr, nat in pools if nat}

    f = "filter"
    fwd = rs.chain(f, "cali-FORWARD")
    inp = rs.chain(f, "cali-INPUT")
    from_d = rs.chain(f, "cali-from-wl-dispatch")
    to_d = rs.chain(f, "cali-to-wl-dispatch")
    to_host = rs.chain(f, "cali-wl-to-host")
    rs.add(f, fwd, "-m", "comment", "--comment", '"Clear accept and pass marks"', "-j", "MARK",
           "--set-xmark", f"0x0/{MARK_ACCEPT | MARK_PASS:#x}")
    rs.add(f, fwd, "-i", "cali+", "-j", from_d)
    rs.add(f, fwd, "-o", "cali+", "-j", to_d)
    if vxlan:
        rs.ipsets[VXLAN_NET] = {f"{ip}/32" for ip in vxlan_peers}
        rs.add(f, inp, "-p", "udp", "-m", "multiport", "--dports", str(vxlan_port), "-m", "set",
               "--match-set", VXLAN_NET, "src", "-m", "addrtype", "--dst-type", "LOCAL",
               "-m", "comment", "--comment", '"Allow IPv4 VXLAN packets from allowed hosts"',
               "-j", "ACCEPT")
        rs.add(f, inp, "-p", "udp", "-m", "multiport", "--dports", str(vxlan_port), "-m",
               "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment",
               '"Drop IPv4 VXLAN packets from non-allowed hosts"', "-j", "DROP")
    rs.add(f, inp, "-i", "cali+", "-g", to_host)
    rs.add(f, to_host, "-j", from_d)
    rs.add(f, to_host, "-m", "comment", "--comment",
           '"Configured DefaultEndpointToHostAction"', "-j", to_host_action)

    used_profiles: list[str] = []
    ordered = sort_policies(policies)
    for ep in sorted(local, key=lambda e: e.iface):
        tw = rs.chain(f, chain_name("cali-tw-", ep.iface))
        fw = rs.chain(f, chain_name("cali-fw-", ep.iface))
        rs.add(f, from_d, "-i", ep.iface, "-g", fw)
        rs.add(f, to_d, "-o", ep.iface, "-g", tw)
        for chain, direction in ((tw, "Ingress"), (fw, "Egress")):
            rs.add(f, chain, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
            rs.add(f, chain, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
            rs.add(f, chain, "-j", "MARK", "--set-xmark", f"0x0/{MARK_ACCEPT:#x}")
            if direction == "Egress" and vxlan:
                rs.add(f, chain, "-p", "udp", "-m", "multiport", "--dports", str(vxlan_port),
                       "-m", "comment", "--comment",
                       '"Drop VXLAN encapped packets originating in workloads"', "-j", "DROP")
            applying = [p for p in ordered if direction in p.types and p.applies_to(ep)]
            if applying:
                rs.add(f, chain, "-j", "MARK", "--set-xmark", f"0x0/{MARK_PASS:#x}")
                prefix = "cali-pi-" if direction == "Ingress" else "cali-po-"
                for p in applying:
                    pc = chain_name(prefix, "_" + short_hash(p.key, 19))
                    rs.add(f, chain, "-m", "mark", "--mark", f"0x0/{MARK_PASS:#x}", "-j", pc)
                    rs.add(f, chain, "-m", "mark", "--mark", f"{MARK_ACCEPT:#x}/{MARK_ACCEPT:#x}",
                           "-m", "comment", "--comment", '"Return if policy accepted"',
                           "-j", "RETURN")
                rs.add(f, chain, "-m", "mark", "--mark", f"0x0/{MARK_PASS:#x}", "-m", "comment",
                       "--comment", '"Drop if no policies passed packet"', "-j", "DROP")
            for prof in ep.profiles:
                pprefix = "cali-pri-" if direction == "Ingress" else "cali-pro-"
                rs.add(f, chain, "-j", chain_name(pprefix, prof))
                rs.add(f, chain, "-m", "mark", "--mark", f"{MARK_ACCEPT:#x}/{MARK_ACCEPT:#x}",
                       "-m", "comment", "--comment", '"Return if profile accepted"',
                       "-j", "RETURN")
                if prof not in used_profiles:
                    used_profiles.append(prof)
            rs.add(f, chain, "-m", "comment", "--comment", '"Drop if no profiles matched"',
                   "-j", "DROP")

    for p in ordered:
        if not any(p.applies_to(ep) for ep in local):
            continue
        for prefix, rules, direction in (("cali-pi-", p.ingress, "Ingress"),
                                         ("cali-po-", p.egress, "Egress")):
            if direction not in p.types:
                continue
            pc = rs.chain(f, chain_name(prefix, "_" + short_hash(p.key, 19)))
            for rule in rules:
                rr.render(f, pc, rule, p.namespace)
    for prof in used_profiles:
        spec = profiles.get(prof, {}).get("spec", {})
        for prefix, key in (("cali-pri-", "ingress"), ("cali-pro-", "egress")):
            pc = rs.chain(f, chain_name(prefix, prof))
            for rule in spec.get(key) or []:
                rr.render(f, pc, rule, "")

    n = "nat"
    post = rs.chain(n, "cali-POSTROUTING")
    natout = rs.chain(n, "cali-nat-outgoing")
    rs.add(n, post, "-j", natout)
    if vxlan:
        rs.add(n, post, "-o", "vxlan.calico", "-m", "addrtype", "!", "--src-type", "LOCAL",
               "--limit-iface-out", "-m", "addrtype", "--src-type", "LOCAL", "-j",
               "MASQUERADE", "--random-fully")
    rs.add(n, natout, "-m", "set", "--match-set", MASQ_POOLS, "src", "-m", "set", "!",
           "--match-set", ALL_POOLS, "dst", "-j", "MASQUERADE", "--random-fully")
    return rs


def restore_payload(rs: Ruleset, existing: dict[str, list[str]]) -> str:
    """An `iptables-restore --noflush` document: our chains rewritten, stale cali-* removed."""
    out: list[str] = []
    for table in ("filter", "nat"):
        chains = rs.chains.get(table, [])
        stale = [c for c in existing.get(table, []) if c.startswith("cali-") and c not in chains]
        if not chains and not stale:
            continue
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in chains]
        out += [f"-F {c}" for c in chains]
        out += rs.rules.get(table, [])
        out += [f"-F {c}" for c in stale]
        out += [f"-X {c}" for c in stale]
        out.append("COMMIT")
    return "\n".join(out) + "\n"
