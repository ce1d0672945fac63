"""kube-proxy's iptables mode for one node: the registry rendered as KUBE-* chains, restored whole.

The chains, their order and the probabilities follow pkg/proxy/iptables/proxier.go:

    nat    PREROUTING, OUTPUT -> KUBE-SERVICES;  POSTROUTING -> KUBE-POSTROUTING
           KUBE-SERVICES   one rule per service port ClusterIP -> KUBE-SVC-<hash>; last rule
                           `-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`
           KUBE-SVC-<hash> `! -s <clusterCIDR>` -> KUBE-MARK-MASQ, then endpoint i of n with
                           `-m statistic --mode random --probability 1/(n-i)` (the last: always)
           KUBE-SEP-<hash> `-s <endpoint>` -> KUBE-MARK-MASQ (hairpin), DNAT to ip:targetPort
           KUBE-NODEPORTS  --dport <nodePort> -> KUBE-EXT-<hash> (mark for masquerade -> SVC)
           KUBE-MARK-MASQ  MARK --or-mark 0x4000; KUBE-POSTROUTING masquerades marked packets
    filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES REJECT service ports without endpoints;
           KUBE-FORWARD accepts marked and established traffic.

Chain names hash the service port name like kube-proxy (sha256, base32, 16 characters), so a
reader who knows kube-proxy's iptables-save output recognises every line here.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from testbed_contract.registry import Endpoint, Registry, Service, ServicePort
from testbed_node import AgentError

MASQ_MARK = "0x4000"
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
FILTER_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS,
                 KUBE_PROXY_FIREWALL)
NAT_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends traffic into one of ours (kube-proxy's jump)."""

    table: str
    chain: str
    target: str
    comment: str
    extra: tuple[str, ...] = ()

    def spec(self) -> list[str]:
        """The rule as iptables arguments (without -A/-I CHAIN)."""
        return [*self.extra, "-m", "comment", "--comment", self.comment, "-j", self.target]


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
JUMPS = (
    Jump("filter", "INPUT", KUBE_EXTERNAL_SERVICES,
         "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "FORWARD", KUBE_EXTERNAL_SERVICES,
         "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
    Jump("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", _NEW),
    Jump("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", _NEW),
    Jump("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    Jump("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    Jump("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    Jump("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    Jump("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    Jump("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    Jump("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
)


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """kube-proxy's portProtoHash: base32(sha256(name + protocol))[:16]."""
    digest = hashlib.sha256((service_port_name + protocol).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def svc_chain(service_port_name: str, protocol: str) -> str:
    """KUBE-SVC-<hash>: the service port's load-balancing chain."""
    return "KUBE-SVC-" + port_proto_hash(service_port_name, protocol)


def ext_chain(service_port_name: str, protocol: str) -> str:
    """KUBE-EXT-<hash>: where NodePort (external) traffic enters."""
    return "KUBE-EXT-" + port_proto_hash(service_port_name, protocol)


def sep_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-<hash>: one endpoint's DNAT chain (the hash includes `ip:port`)."""
    return "KUBE-SEP-" + port_proto_hash(service_port_name, protocol + endpoint)


def probability(n: int) -> str:
    """kube-proxy's computeProbability: 1/n printed with ten decimals."""
    return f"{1.0 / n:0.10f}"


def selection_odds(n: int) -> list[float]:
    """The unconditional chance of each of n endpoints under the 1/n, 1/(n-1), ... rules.

    Rule i is reached with the chance that rules 0..i-1 did not match, then matches with
    1/(n-i): the product telescopes to exactly 1/n for every endpoint.
    """
    odds, remaining = [], 1.0
    for i in range(n):
        p = 1.0 if i == n - 1 else float(probability(n - i))
        odds.append(remaining * p)
        remaining *= 1.0 - p
    return odds


def _comment(text: str) -> list[str]:
    return ["-m", "comment", "--comment", f'"{text}"']


def _line(*parts: str | Sequence[str]) -> str:
    tokens: list[str] = []
    for part in parts:
        if isinstance(part, str):
            tokens.append(part)
        else:
            tokens.extend(part)
    return " ".join(tokens)


@dataclass
class Ruleset:
    """The rendered tables: chain declarations and rules per table, and which chains are ours."""

    filter_chains: list[str] = field(default_factory=list)
    filter_rules: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)
    active_nat_chains: set[str] = field(default_factory=set)
    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)

    def restore_input(self, stale_nat_chains: Sequence[str] = ()) -> str:
        """The iptables-restore --noflush payload; stale service chains are flushed and removed."""
        stale = sorted(set(stale_nat_chains) - self.active_nat_chains)
        out = ["*filter", *(f":{c} - [0:0]" for c in self.filter_chains), *self.filter_rules,
               "COMMIT", "*nat", *(f":{c} - [0:0]" for c in self.nat_chains),
               *(f":{c} - [0:0]" for c in stale), *self.nat_rules,
               *(f"-X {c}" for c in stale), "COMMIT"]
        return "\n".join(out) + "\n"


def render(reg: Registry, cluster_cidr: str = "", random_fully: bool = True) -> Ruleset:
    """Every service port of the registry as kube-proxy's nat and filter rules."""
    rs = Ruleset(filter_chains=list(FILTER_CHAINS), nat_chains=list(NAT_CHAINS))
    cidr = cluster_cidr or reg.cluster_cidr
    masq = f"{MASQ_MARK}/{MASQ_MARK}"
    rs.nat_rules += [
        _line("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark", masq, "-j", "RETURN"),
        _line("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", MASQ_MARK),
        _line("-A", KUBE_POSTROUTING, _comment("kubernetes service traffic requiring SNAT"),
              "-j", "MASQUERADE", *(["--random-fully"] if random_fully else [])),
        _line("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", MASQ_MARK),
    ]
    for svc in sorted(reg.services.values(), key=lambda s: s.name):
        for port in svc.ports:
            _render_port(rs, reg, svc, port, cidr)
    # Tail call to the NodePorts: must stay the last rule of KUBE-SERVICES.
    rs.nat_rules.append(_line(
        "-A", KUBE_SERVICES,
        _comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
        "-m", "addrtype", "--dst-type", "LOCAL", "!", "-d", "127.0.0.0/8",
        "-j", KUBE_NODEPORTS))
    rs.filter_rules += [
        _line("-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"),
        _line("-A", KUBE_FORWARD, _comment("kubernetes forwarding rules"),
              "-m", "mark", "--mark", masq, "-j", "ACCEPT"),
        _line("-A", KUBE_FORWARD, _comment("kubernetes forwarding conntrack rule"),
              "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
    ]
    return rs


def _render_port(rs: Ruleset, reg: Registry, svc: Service, port: ServicePort,
                 cidr: str) -> None:
    spn = svc.port_name(port)
    proto = port.protocol.lower()
    eps = reg.endpoints(svc, port)
    rs.endpoints[spn] = eps
    svc_c, ext_c = svc_chain(spn, proto), ext_chain(spn, proto)
    match = ["-m", proto, "-p", proto]
    cluster_ip = ["-d", svc.cluster_ip, "--dport", str(port.port)]
    if not eps:
        # No endpoints at all: kube-proxy writes no nat chains, only filter REJECTs.
        no_eps = _comment(f"{spn} has no endpoints")
        rs.filter_rules.append(_line("-A", KUBE_SERVICES, no_eps, match, cluster_ip,
                                     "-j", "REJECT"))
        if port.node_port:
            rs.filter_rules.append(_line(
                "-A", KUBE_EXTERNAL_SERVICES, no_eps, "-m", "addrtype", "--dst-type", "LOCAL",
                match, "--dport", str(port.node_port), "-j", "REJECT"))
        return
    rs.nat_rules.append(_line("-A", KUBE_SERVICES, _comment(f"{spn} cluster IP"), match,
                              cluster_ip, "-j", svc_c))
    if port.node_port:
        rs.nat_rules.append(_line("-A", KUBE_NODEPORTS, _comment(spn), match,
                                  "--dport", str(port.node_port), "-j", ext_c))
        rs.nat_chains.append(ext_c)
        rs.active_nat_chains.add(ext_c)
        rs.nat_rules += [
            _line("-A", ext_c, _comment(f"masquerade traffic for {spn} external destinations"),
                  "-j", KUBE_MARK_MASQ),
            _line("-A", ext_c, "-j", svc_c),
        ]
    rs.nat_chains.append(svc_c)
    rs.active_nat_chains.add(svc_c)
    if cidr:
        # Off-cluster sources reaching a ClusterIP (a node, a static route) get masqueraded.
        rs.nat_rules.append(_line("-A", svc_c, _comment(f"{spn} cluster IP"), match,
                                  cluster_ip, "!", "-s", cidr, "-j", KUBE_MARK_MASQ))
    n = len(eps)
    seps = [sep_chain(spn, proto, str(ep)) for ep in eps]
    for i, (ep, sep) in enumerate(zip(eps, seps, strict=True)):
        odds = ([] if i == n - 1 else
                ["-m", "statistic", "--mode", "random", "--probability", probability(n - i)])
        rs.nat_rules.append(_line("-A", svc_c, _comment(f"{spn} -> {ep}"), odds, "-j", sep))
    for ep, sep in zip(eps, seps, strict=True):
        rs.nat_chains.append(sep)
        rs.active_nat_chains.add(sep)
        rs.nat_rules += [
            _line("-A", sep, _comment(spn), "-s", ep.ip, "-j", KUBE_MARK_MASQ),
            _line("-A", sep, _comment(spn), match, "-j", "DNAT", "--to-destination", str(ep)),
        ]


_CHAIN_LINE = re.compile(r"^:(\S+) ")


def chains_in(save_output: str) -> set[str]:
    """Chain names declared in iptables-save output."""
    return {m.group(1) for line in save_output.splitlines() if (m := _CHAIN_LINE.match(line))}


def has_jump(save_output: str, jump: Jump) -> bool:
    """Whether iptables-save output of the jump's table holds the jump (comment and target)."""
    return any(line.startswith(f"-A {jump.chain} ") and line.endswith(f"-j {jump.target}")
               and f'--comment "{jump.comment}"' in line for line in save_output.splitlines())


class IptablesError(AgentError):
    """iptables refused a change."""


class Iptables:
    """The node's iptables through its own tools (-w: wait for the xtables lock)."""

    def __init__(self, binary: str = "iptables") -> None:
        self.binary = binary

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False,
                              timeout=30)

    def has_random_fully(self) -> bool:
        """MASQUERADE --random-fully needs iptables >= 1.6.2."""
        res = self._run([self.binary, "--version"])
        m = re.search(r"v(\d+)\.(\d+)\.(\d+)", res.stdout + res.stderr)
        if m is None:
            return False
        return tuple(int(x) for x in m.groups()) >= (1, 6, 2)

    def ensure_jumps(self) -> list[str]:
        """Prepend each jump rule that is missing (our chains must exist); what was added."""
        saved = {table: self.save(table) for table in {j.table for j in JUMPS}}
        added = []
        for j in JUMPS:
            if has_jump(saved[j.table], j):
                continue
            res = self._run([self.binary, "-w", "-t", j.table, "-I", j.chain, *j.spec()])
            if res.returncode != 0:
                raise IptablesError(f"cannot add {j.table} {j.chain} -> {j.target}: "
                                    f"{res.stderr.strip()}")
            added.append(f"{j.table}/{j.chain}->{j.target}")
        return added

    def save(self, table: str) -> str:
        """iptables-save of one table."""
        res = self._run([f"{self.binary}-save", "-t", table])
        if res.returncode != 0:
            raise IptablesError(f"iptables-save -t {table} failed: {res.stderr.strip()}")
        return res.stdout

    def stale_service_chains(self, active: set[str]) -> list[str]:
        """Our per-service chains in the nat table that the new rules no longer use."""
        return sorted(c for c in chains_in(self.save("nat")) - active
                      if c.startswith(SERVICE_CHAIN_PREFIXES))

    def restore(self, payload: str) -> None:
        """One atomic iptables-restore that replaces whole chains and leaves the rest alone."""
        res = self._run([f"{self.binary}-restore", "-w", "--noflush"], stdin=payload)
        if res.returncode != 0:
            raise IptablesError(f"iptables-restore failed: {res.stderr.strip()}")
