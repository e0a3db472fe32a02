"""NetworkPolicies + this node's pods in, nftables ruleset text out (pure and deterministic).

One table, `ip flotilla-netpol` (a local cluster's master, sharing the host's
namespace, takes a name of its own), apart from the proxy's. It sees packets
after the proxy's DNAT, so a policy applies to the pod a Service picked:

    egress-forward  (filter hook forward, priority 0)   ct state established,related accept
                                                         ip saddr vmap @egress-pods
    ingress-forward (filter hook forward, priority 1)   ct state established,related accept
                                                         ip daddr vmap @ingress-pods
    egress-input    (filter hook input,   priority 0)   the same as egress-forward: a pod's
                                                         packets to its own node's addresses

    egress-pods / ingress-pods: isolated pod IP -> goto pods-<direction>-<hash>, one chain per
        combination of policies selecting a pod: jump <direction>/<ns>/<policy> for each, then drop
    <direction>/<ns>/<policy>: one rule per (peer, port) of each rule, ending in accept

Why two base chains on the forward hook: `accept` ends only the base chain it is
in, and the packet goes on to the next one, so a packet between two pods of
this node is checked against the sender's egress and then the receiver's
ingress; a `drop` is final. Pods no policy isolates are in neither map and
pass. Traffic from the node itself (the kubelet's probes) goes through the
output hook, which the table leaves alone: always allowed, as Kubernetes
specifies. Same-node pod-to-pod packets cross the bridge and reach the forward
hook through br_netfilter; replies and established flows pass on conntrack, so
a policy change never cuts a connection it already let through.

Selector peers are sets of pod IPs shared by every rule that selects alike
(`peers-<digest of the selectors>`, Calico's IP sets): pods of the policy's
namespace, or of the namespaces a namespaceSelector picks. A pod joining them is
one element, however many policies name the set, and 1,000 policies whose peers
select the same pods hold one copy. An ipBlock is its CIDR in the rule, its
`except` CIDRs plain `!=` comparisons beside it (up to four; more go into an
interval set: every set is one more kernel object for each transaction to look
up). A named port is resolved per pod: for ingress against the selected pods of
this node (a set of pod IP . protocol . port), for egress against the
destination pods (the same set shape, which then names the peers too). Only
policies selecting a pod of this node are compiled; the others cost nothing.

The unit is the proxy's `Fragment` (its chains, sets and elements); `diff` turns
old fragments into new ones as one transaction ordered so that nothing is
deleted while still referenced, and `full_table` writes the whole table.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nodeagent.netpol.index import ClusterIndex, PodInfo
from nodeagent.proxy.rules import FAMILY, Fragment
from proto import networking_pb2
from proto.selectors import LabelSelector, from_message

TABLE = "flotilla-netpol"
INGRESS_PODS = "ingress-pods"
EGRESS_PODS = "egress-pods"
BASE_CHAINS = ("egress-forward", "ingress-forward", "egress-input")
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_NAME_LIMIT = 200  # nft's names stop at 256 bytes; longer Kubernetes names are hashed
EVERYTHING = LabelSelector()
_INLINE_EXCEPTS = 4  # more excepts than this in one ipBlock go into an interval set


def nft_name(text: str) -> str:
    if len(text) <= _NAME_LIMIT:
        return text
    return f"{text[:40]}-{hashlib.sha1(text.encode()).hexdigest()}"


def policy_types(spec: networking_pb2.NetworkPolicySpec) -> set[str]:
    """The directions a policy isolates; defaulting fills them, but a policy read raw still works."""
    if spec.policy_types:
        return set(spec.policy_types)
    return {"Ingress", "Egress"} if spec.egress else {"Ingress"}


@dataclass
class Compiled:
    """One policy on this node: its fragment and which of this node's pods it isolates, per direction."""

    fragment: Fragment = field(default_factory=Fragment)
    ingress_targets: frozenset[str] = frozenset()  # pod keys
    egress_targets: frozenset[str] = frozenset()
    peers: dict[str, PeerSpec] = field(default_factory=dict)  # the shared peer sets its rules name, by set name


@dataclass(frozen=True)
class PeerSpec:
    """A selector peer as a set of pod IPs, shared by every rule that names the same pods.

    `namespace` is the policy's own namespace when the peer has no namespaceSelector
    ("" when it has one); the set's name is a digest of what selects, so two policies
    whose peers select alike share one set, and a pod joining it is one element.
    """

    name: str
    namespace: str
    namespaces: LabelSelector | None
    pods: LabelSelector

    def matches(self, info: PodInfo, namespace_labels: Mapping[str, str]) -> bool:
        if self.namespaces is None:
            in_scope = info.namespace == self.namespace
        else:
            in_scope = self.namespaces.matches(namespace_labels)
        return in_scope and self.pods.matches(info.label_map())


def peer_spec(peer: networking_pb2.NetworkPolicyPeer, namespace: str) -> PeerSpec:
    by_namespace = peer.HasField("namespace_selector")
    what = b"\0".join((b"" if by_namespace else namespace.encode(),
                       peer.namespace_selector.SerializeToString(deterministic=True) if by_namespace else b"-",
                       peer.pod_selector.SerializeToString(deterministic=True) if peer.HasField("pod_selector")
                       else b"*"))
    return PeerSpec(f"peers-{hashlib.sha1(what).hexdigest()[:20]}", "" if by_namespace else namespace,
                    from_message(peer.namespace_selector) if by_namespace else None,
                    from_message(peer.pod_selector) if peer.HasField("pod_selector") else EVERYTHING)


def spec_pods(spec: PeerSpec, index: ClusterIndex) -> list[PodInfo]:
    """The pods a peer set holds."""
    namespaces = [spec.namespace] if spec.namespaces is None else index.select_namespaces(spec.namespaces)
    return [info for ns in namespaces for info in index.select_pods(ns, spec.pods)]


def peer_layer(specs: Iterable[PeerSpec], index: ClusterIndex) -> Fragment:
    """The shared peer sets, filled: one set of pod IPs per distinct selector peer."""
    out = Fragment()
    for spec in sorted(specs, key=lambda s: s.name):
        add_peer_set(out, spec, index)
    return out


def add_peer_set(out: Fragment, spec: PeerSpec, index: ClusterIndex) -> None:
    out.sets[spec.name] = "type ipv4_addr;"
    out.elements[spec.name] = dict.fromkeys(_sorted_ips(p.ip for p in spec_pods(spec, index)), "")


def update_peer_layer(applied: Fragment, applied_specs: Mapping[str, PeerSpec], specs: Mapping[str, PeerSpec],
                      dirty: set[str], index: ClusterIndex) -> Fragment:
    """`applied` with the sets no longer named dropped, new ones added and `dirty` ones refilled.

    What did not change is shared with `applied` (the same element dicts), so `diff`
    passes over it at once.
    """
    layer = Fragment(sets=dict(applied.sets), elements=dict(applied.elements))
    for name in set(applied_specs) - set(specs):
        layer.sets.pop(name, None)
        layer.elements.pop(name, None)
    for name, spec in specs.items():
        if name not in applied_specs or name in dirty:
            add_peer_set(layer, spec, index)
    return layer


def peer_specs(compiled: Mapping[str, Compiled]) -> dict[str, PeerSpec]:
    """Every shared peer set the compiled policies name."""
    return {name: spec for c in compiled.values() for name, spec in c.peers.items()}


# Peer pods are looked up once per (namespace, peer) in a pass over many policies.
PeerCache = dict[tuple[str, bytes], list[PodInfo]]


def peer_pods(peer: networking_pb2.NetworkPolicyPeer, namespace: str, index: ClusterIndex,
              cache: PeerCache | None = None) -> list[PodInfo]:
    """The pods a selector peer picks (a policy in `namespace`)."""
    key = (namespace, peer.SerializeToString(deterministic=True))
    if cache is not None and key in cache:
        return cache[key]
    pods = from_message(peer.pod_selector) if peer.HasField("pod_selector") else EVERYTHING
    if peer.HasField("namespace_selector"):
        namespaces = index.select_namespaces(from_message(peer.namespace_selector))
    else:
        namespaces = [namespace]
    found = [info for ns in namespaces for info in index.select_pods(ns, pods)]
    if cache is not None:
        cache[key] = found
    return found


def _ipv4_block(block: networking_pb2.IPBlock) -> tuple[ipaddress.IPv4Network, list[ipaddress.IPv4Network]] | None:
    return _parse_block(block.cidr, tuple(getattr(block, "except")))  # a Python keyword


@functools.lru_cache(maxsize=4096)
def _parse_block(text: str, except_texts: tuple[str, ...]) -> tuple[ipaddress.IPv4Network,
                                                                     list[ipaddress.IPv4Network]] | None:
    try:
        cidr = ipaddress.ip_network(text, strict=False)
        excepts = [ipaddress.ip_network(e, strict=False) for e in except_texts]
    except ValueError:
        return None
    if not isinstance(cidr, ipaddress.IPv4Network):
        return None  # the cluster is IPv4: an IPv6 block matches nothing here
    return cidr, [e for e in excepts if isinstance(e, ipaddress.IPv4Network)]


def _in_block(ip: str, block: tuple[ipaddress.IPv4Network, list[ipaddress.IPv4Network]]) -> bool:
    address = ipaddress.IPv4Address(ip)
    return address in block[0] and not any(address in e for e in block[1])


def _sorted_ips(ips: Iterable[str]) -> list[str]:
    return sorted(set(ips))  # as text: deterministic, and a fifth of the cost of numeric order


@dataclass(frozen=True)
class _Direction:
    name: str  # ingress | egress
    peer_address: str  # the field naming the other end: saddr for ingress, daddr for egress


INGRESS = _Direction("ingress", "saddr")
EGRESS = _Direction("egress", "daddr")


def _compile_rule(out: Fragment, base: str, direction: _Direction, ports: Sequence[networking_pb2.NetworkPolicyPort],
                  peers: Sequence[networking_pb2.NetworkPolicyPeer], namespace: str, targets: Sequence[PodInfo],
                  index: ClusterIndex, cache: PeerCache | None, peer_sets: dict[str, PeerSpec]) -> list[str]:
    """The rules of one ingress/egress rule; sets of its own go into `out`, shared peer sets into `peer_sets`."""
    addr = f"ip {direction.peer_address}"
    peer_matches: list[str] = []
    selected: list[PodInfo] = []
    blocks: list[tuple[ipaddress.IPv4Network, list[ipaddress.IPv4Network]]] = []
    selector_matches: list[str] = []
    rule_specs: dict[str, PeerSpec] = {}
    for j, peer in enumerate(peers):
        if peer.HasField("ip_block"):
            block = _ipv4_block(peer.ip_block)
            if block is None:
                continue
            blocks.append(block)
            match = f"{addr} {block[0]}"
            if len(block[1]) <= _INLINE_EXCEPTS:
                # A few excepts are plain comparisons in the rule: a set is a kernel object to look up.
                match += "".join(f" {addr} != {e}" for e in sorted(block[1]))
            else:
                name = nft_name(f"{base}/except{j}")
                out.sets[name] = "type ipv4_addr; flags interval;"
                for e in sorted(block[1]):
                    out.add_element(name, str(e), "")
                match += f" {addr} != @{name}"
            peer_matches.append(match)
        else:
            spec = peer_spec(peer, namespace)
            rule_specs[spec.name] = spec
            selector_matches.append(f"{addr} @{spec.name}")
            if direction is EGRESS and any(p.HasField("port") and not p.port.isdigit() for p in ports):
                selected += peer_pods(peer, namespace, index, cache)
    peer_matches = list(dict.fromkeys(selector_matches)) + peer_matches
    if not peers:
        peer_matches = [""]
    elif not peer_matches:
        return []  # only peers this node cannot match (IPv6 blocks): the rule allows nothing here

    port_matches: list[str] = []
    rules: list[str] = []
    for k, port in enumerate(ports):
        protocol = port.protocol or "TCP"
        nft_protocol = _PROTOCOLS.get(protocol)
        if nft_protocol is None:
            continue
        if not port.HasField("port"):
            port_matches.append(f"meta l4proto {nft_protocol}")
        elif port.port.isdigit():
            number = int(port.port)
            span = f"{number}-{port.end_port}" if port.HasField("end_port") and port.end_port > number else str(number)
            port_matches.append(f"meta l4proto {nft_protocol} th dport {span}")
        else:
            # A named port means a number per pod: the set pairs each pod's IP with its own number.
            name = nft_name(f"{base}/port{k}")
            out.sets[name] = "type ipv4_addr . inet_proto . inet_service;"
            if direction is INGRESS:
                owners: Iterable[PodInfo] = targets
            elif not peers:
                owners = index.pods.values()
            else:
                owners = [*selected, *(p for p in index.pods.values() if any(_in_block(p.ip, b) for b in blocks))]
            numbered = {(info.ip, info.named_port(port.port, protocol)) for info in owners}
            for ip, number_of in sorted((ip, n) for ip, n in numbered if n is not None):
                out.add_element(name, f"{ip} . {nft_protocol} . {number_of}", "")
            by_pod = f"ip daddr . meta l4proto . th dport @{name} accept"
            # For egress the set names the destinations already; for ingress the peers still apply.
            if direction is EGRESS:
                rules.append(by_pod)
            else:
                rules += [" ".join(filter(None, (peer, by_pod))) for peer in peer_matches]
    if not ports:
        port_matches = [""]
    rules = [" ".join(filter(None, (peer, port, "accept"))) for peer in peer_matches for port in port_matches] + rules
    # Egress rules with named ports only name their destinations through their own set.
    peer_sets.update({name: spec for name, spec in rule_specs.items() if any(f"@{name} " in r for r in rules)})
    return rules


_Rule = networking_pb2.NetworkPolicyIngressRule | networking_pb2.NetworkPolicyEgressRule


def compile_policy(policy: networking_pb2.NetworkPolicy, index: ClusterIndex, node: str,
                   cache: PeerCache | None = None) -> Compiled:
    """`policy` as it applies to node `node`'s pods (empty when it selects none of them)."""
    namespace, spec = policy.metadata.namespace, policy.spec
    targets = sorted((p for p in index.select_pods(namespace, from_message(spec.pod_selector)) if p.node == node),
                     key=lambda p: p.key)
    if not targets:
        return Compiled()
    types = policy_types(spec)
    compiled = Compiled()
    keys = frozenset(p.key for p in targets)
    directions: list[tuple[_Direction, Sequence[_Rule], str]] = [
        (INGRESS, list(spec.ingress), "from"), (EGRESS, list(spec.egress), "to")]
    for direction, rules, peers_field in directions:
        if direction.name.capitalize() not in types:
            continue
        chain = nft_name(f"{direction.name}/{namespace}/{policy.metadata.name}")
        lines: list[str] = []
        for i, rule in enumerate(rules):
            lines += _compile_rule(compiled.fragment, f"{chain}/{i}", direction, list(rule.ports),
                                   list(getattr(rule, peers_field)), namespace, targets, index, cache,
                                   compiled.peers)
        compiled.fragment.chains[chain] = tuple(lines)
        if direction is INGRESS:
            compiled.ingress_targets = keys
        else:
            compiled.egress_targets = keys
    return compiled


def pod_layer(compiled: Mapping[str, Compiled], index: ClusterIndex) -> Fragment:
    """The maps from isolated pod IPs to their policies' chains, and one chain per combination of policies."""
    out = Fragment()
    for direction, map_name in ((INGRESS, INGRESS_PODS), (EGRESS, EGRESS_PODS)):
        policies_of: dict[str, list[str]] = {}
        for policy_key in sorted(compiled):
            c = compiled[policy_key]
            for pod in (c.ingress_targets if direction is INGRESS else c.egress_targets):
                policies_of.setdefault(pod, []).append(policy_key)
        for pod in sorted(policies_of):
            info = index.pods.get(pod)
            if info is None:
                continue
            keys = policies_of[pod]
            digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]
            chain = f"pods-{direction.name}-{digest}"
            if chain not in out.chains:
                jumps = tuple(f"jump {nft_name(f'{direction.name}/{key}')}" for key in keys)
                out.chains[chain] = (*jumps, "drop")
            out.add_element(map_name, info.ip, f"goto {chain}")
    return out


# ---------------------------------------------------------------- transactions


def _element(key: str, value: str) -> str:
    return f"{key} : {value}" if value else key


def _base_declarations(t: str) -> list[str]:
    return [
        f"add table {t}",
        f"add map {t} {INGRESS_PODS} {{ type ipv4_addr : verdict; }}",
        f"add map {t} {EGRESS_PODS} {{ type ipv4_addr : verdict; }}",
        f"add chain {t} egress-forward {{ type filter hook forward priority 0; policy accept; }}",
        f"add chain {t} ingress-forward {{ type filter hook forward priority 1; policy accept; }}",
        f"add chain {t} egress-input {{ type filter hook input priority 0; policy accept; }}",
    ]


def _base_rules(t: str) -> list[str]:
    lines = []
    for chain, lookup in (("egress-forward", f"ip saddr vmap @{EGRESS_PODS}"),
                          ("ingress-forward", f"ip daddr vmap @{INGRESS_PODS}"),
                          ("egress-input", f"ip saddr vmap @{EGRESS_PODS}")):
        lines += [f"add rule {t} {chain} ct state established,related accept", f"add rule {t} {chain} {lookup}"]
    return lines


def full_table(fragments: Iterable[Fragment], *, table: str = TABLE) -> str:
    """One transaction replacing the whole table (start-up, and after a failed change)."""
    t = f"{FAMILY} {table}"
    fragments = list(fragments)
    # "add" first makes the delete succeed whether or not the table exists; both in one atomic batch.
    lines = [f"add table {t}", f"delete table {t}", *_base_declarations(t)]
    for frag in fragments:
        lines += [f"add set {t} {name} {{ {body} }}" for name, body in frag.sets.items()]
        lines += [f"add chain {t} {name}" for name in frag.chains]
    for frag in fragments:
        for name, rules in frag.chains.items():
            lines += [f"add rule {t} {name} {rule}" for rule in rules]
    elements: dict[str, list[str]] = {}
    for frag in fragments:
        for name, items in frag.elements.items():
            elements.setdefault(name, []).extend(_element(k, v) for k, v in items.items())
    lines += [f"add element {t} {name} {{ {', '.join(items)} }}" for name, items in elements.items() if items]
    # The hooks last: nothing reaches the chains before they are whole.
    lines += _base_rules(t)
    return "\n".join(lines) + "\n"


def delete_table(*, table: str = TABLE) -> str:
    t = f"{FAMILY} {table}"
    return f"add table {t}\ndelete table {t}\n"


def diff(changes: Iterable[tuple[Fragment, Fragment]], *, table: str = TABLE) -> str:
    """One transaction turning each old fragment into its new one; "" when nothing changes.

    Ordered across fragments, because the pod layer's chains jump to policy chains: first
    every new set and chain, then changed rules and elements, and only then the flushes
    and deletes, so nothing is deleted while a rule or map element still names it.
    """
    t = f"{FAMILY} {table}"
    declare: list[str] = []
    removals: list[str] = []
    rewrites: list[str] = []
    additions: list[str] = []
    doomed_chains: list[str] = []
    doomed_sets: list[str] = []
    for old, new in changes:
        if old == new:
            continue
        declare += [f"add set {t} {name} {{ {body} }}" for name, body in new.sets.items() if name not in old.sets]
        declare += [f"add chain {t} {name}" for name in new.chains if name not in old.chains]
        for name in sorted(set(old.elements) | set(new.elements)):
            before, after = old.elements.get(name, {}), new.elements.get(name, {})
            if before is after:
                continue  # layers copied from the applied one share what did not change
            if name in old.sets and name not in new.sets:
                continue  # the set goes as a whole
            gone = [k for k, v in before.items() if after.get(k) != v]
            fresh = [_element(k, v) for k, v in after.items() if before.get(k) != v]
            if gone:
                removals.append(f"delete element {t} {name} {{ {', '.join(gone)} }}")
            if fresh:
                additions.append(f"add element {t} {name} {{ {', '.join(fresh)} }}")
        for name, rules in new.chains.items():
            if old.chains.get(name) != rules:
                if name in old.chains:
                    rewrites.append(f"flush chain {t} {name}")
                rewrites += [f"add rule {t} {name} {rule}" for rule in rules]
        doomed_chains += [name for name in old.chains if name not in new.chains]
        doomed_sets += [name for name in old.sets if name not in new.sets]
    lines = [*declare, *removals, *rewrites, *additions]
    lines += [f"flush chain {t} {name}" for name in doomed_chains]
    lines += [f"delete chain {t} {name}" for name in doomed_chains]
    lines += [f"delete set {t} {name}" for name in doomed_sets]
    return "\n".join(lines) + "\n" if lines else ""
