"""The proxy's decision code: Services + EndpointSlices in, nftables ruleset text out (pure).

Every node's proxy turns the cluster's Services into kernel rules in one table,
`ip flotilla-proxy` (another name with --table, when several proxies share a
namespace), laid out as kube-proxy's nftables mode lays it out:

    prerouting / output (nat, priority dstnat / -100) ─► services  (output: the node's own
               connections to a Service carry the masquerade mark)
    services:  ip daddr . meta l4proto . th dport vmap @service-ips        (ClusterIP, LB/external IPs)
               fib daddr type local  meta l4proto . th dport vmap @service-nodeports   (or: ip daddr in
                                                 --nodeport-addresses and local)
    svc-<ns>/<name>/<proto>/<port>:  numgen random mod N vmap { 0 : goto ep-…, 1 : goto ep-… }
    ep-…:      hairpin mark; dnat to <pod IP>:<targetPort>
    ext-…:     (NodePort / LB) masquerade mark, then goto svc-…
    postrouting (nat, srcnat): meta mark & 0x4000 == 0x4000 masquerade
    filter-input / -forward / -output (filter, -110) ─► endpoints-check:
               Services with no ready endpoint are rejected there (tcp reset,
               icmp port-unreachable) instead of black-holed.

Traffic policies `Local` (internal: ClusterIP; external: NodePort, LB and
external IPs) pick among this node's endpoints only, external ones without the
masquerade mark; hairpin marking is kept for the endpoints that may be pods of
this node.

Why verdict maps: a packet costs one hash lookup whatever the number of
Services (iptables walks a list of rules per Service), and one map element per
service port makes a change a few element adds and deletes.

The unit is a `Fragment`: everything one Service contributes (its chains, its
map elements, its affinity sets). The ruleset is the base chains plus the union
of fragments; `full_ruleset` writes it as one atomic replace, `fragment_diff`
writes the transaction that turns one fragment into another, so a change costs
work proportional to that Service only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from client.endpointslices import port_endpoints, usable
from proto import core_pb2, discovery_pb2

TABLE = "flotilla-proxy"
FAMILY = "ip"
# The bit kube-proxy uses too: packets carrying it leave the node masqueraded.
MASQUERADE_MARK = 0x4000

SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
# The endpoints map is split in shards: the kernel checks every element of a map against
# every rule using the map, so one map for 10,000 Services cost 10,000 x 100,000 checks
# (16 s and more); 256 shards of ~40 Services each cost 256 x 40 x 400 (1.7 s in all).
# A map's value type names the protocol of its port (typeof ... tcp dport), so each
# protocol has its own shards; UDP and SCTP Services are fewer.
ENDPOINT_SHARDS = {"tcp": 256, "udp": 32, "sctp": 4}
HAIRPIN = "hairpin"
# Each service port owns the endpoints-map keys [slot * SLOT_SIZE, slot * SLOT_SIZE + N).
SLOT_SIZE = 1024

_MAP_TYPES = {
    # numgen's result is the key: the map has no datatype of its own for it, hence typeof.
    **{f"endpoints-{proto}-{shard}": f"typeof numgen random mod 1 : ip daddr . {proto} dport"
       for proto, shards in ENDPOINT_SHARDS.items() for shard in range(shards)},
    SERVICE_IPS: "ipv4_addr . inet_proto . inet_service : verdict",
    NO_ENDPOINT_SERVICES: "ipv4_addr . inet_proto . inet_service : verdict",
    SERVICE_NODEPORTS: "inet_proto . inet_service : verdict",
    NO_ENDPOINT_NODEPORTS: "inet_proto . inet_service : verdict",
}

_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with everything the rules need to know about it."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # nft's spelling: tcp, udp, sctp
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress and spec.externalIPs
    endpoints: tuple[Endpoint, ...] = ()  # ready ones only, sorted so renders are stable
    affinity_timeout: int = 0  # seconds of ClientIP affinity; 0 means none
    slot: int = 0  # this port's block of keys in the endpoints map, given by the proxier
    # Traffic policies: Local sends traffic only to the endpoints on this node (`local_endpoints`).
    # internal: ClusterIP traffic; external: NodePort, LoadBalancer and external IPs (and no masquerade,
    # so the endpoint sees the client's own address).
    local_endpoints: tuple[Endpoint, ...] = ()
    internal_local: bool = False
    external_local: bool = False
    external_slot: int = 0  # the external path's own block, when it picks from other endpoints than ClusterIP's
    # Endpoints that may be pods on this node (here, or placement unknown; None: all of them). Only
    # those can hairpin: a pod's packets to a Service cross its own node's proxy, nobody else's.
    hairpin_endpoints: tuple[Endpoint, ...] | None = None

    @property
    def id(self) -> str:
        # nft names may hold letters, digits and / - _ . : Kubernetes names fit as they are.
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or self.port}"

    @property
    def external(self) -> bool:
        return bool(self.node_port or self.external_ips)

    @property
    def split_policies(self) -> bool:
        """External traffic picks from another set of endpoints than ClusterIP traffic (needs its own block)."""
        return self.external and self.internal_local != self.external_local

    @property
    def slot_ids(self) -> tuple[str, ...]:
        """The endpoints-map blocks this port needs, by a name stable while its policies are."""
        return (self.id, f"{self.id}/external") if self.split_policies else (self.id,)


def service_ports(svc: core_pb2.Service, slices: Sequence[discovery_pb2.EndpointSlice] | None,
                  node_name: str = "") -> list[ServicePort]:
    """What the proxy must program for `svc` on node `node_name`, given its EndpointSlices (None: none yet).

    Headless and ExternalName Services get nothing: DNS answers for them.
    """
    spec = svc.spec
    if spec.type == "ExternalName" or not spec.cluster_ip or spec.cluster_ip == "None":
        return []
    external = tuple(sorted({i.ip for i in svc.status.load_balancer.ingress if i.ip} | set(spec.external_ips)))
    timeout = 0
    if spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        timeout = client_ip.timeout_seconds if client_ip.HasField("timeout_seconds") else 10800
    external_local = spec.external_traffic_policy == "Local" and spec.type in ("NodePort", "LoadBalancer")
    result = []
    for port in spec.ports:
        protocol = _PROTOCOLS.get(port.protocol or "TCP")
        if protocol is None:
            continue
        ready, local, elsewhere = _ready_endpoints(slices or (), port.name, port.protocol or "TCP", node_name)
        result.append(ServicePort(
            namespace=svc.metadata.namespace, name=svc.metadata.name, port_name=port.name, protocol=protocol,
            cluster_ip=spec.cluster_ip, port=port.port,
            node_port=port.node_port if spec.type in ("NodePort", "LoadBalancer") else 0,
            external_ips=external if spec.type == "LoadBalancer" or spec.external_ips else (),
            endpoints=ready, affinity_timeout=timeout, local_endpoints=local,
            hairpin_endpoints=tuple(ep for ep in ready if ep not in elsewhere) if node_name else None,
            internal_local=spec.internal_traffic_policy == "Local", external_local=external_local))
    return result


def _ready_endpoints(slices: Sequence[discovery_pb2.EndpointSlice], port_name: str, protocol: str,
                     node_name: str) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...], set[Endpoint]]:
    """The endpoints to use for the port, those of them on `node_name`, and those known to be on other nodes.

    The endpointslice controller copies each Service port's name onto the slice port and resolves
    targetPort (possibly a named container port) per pod: match by name, not number. The ready
    endpoints are used, or, while none is, those still serving as they terminate (usable()).
    """
    found: set[Endpoint] = set()
    local: set[Endpoint] = set()
    elsewhere: set[Endpoint] = set()
    for ep in usable(port_endpoints(slices, port_name, protocol)):
        endpoint = Endpoint(ep.ip, ep.port)
        found.add(endpoint)
        if node_name and ep.node_name == node_name:
            local.add(endpoint)
        elif ep.node_name:
            elsewhere.add(endpoint)
    return _sorted(found), _sorted(local), elsewhere


def _sorted(endpoints: set[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(sorted(endpoints, key=lambda e: (tuple(int(b) for b in e.ip.split(".")), e.port)))


# ---------------------------------------------------------------- fragments


@dataclass
class Fragment:
    """What one Service adds to the table; two fragments of different Services never share a name."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # chain name -> its rules, in order
    sets: dict[str, str] = field(default_factory=dict)  # set name -> its declaration body
    elements: dict[str, dict[str, str]] = field(default_factory=dict)  # map/set name -> key -> value ("" in sets)

    def add_element(self, map_name: str, key: str, verdict: str) -> None:
        self.elements.setdefault(map_name, {})[key] = verdict


def render_service(ports: Iterable[ServicePort]) -> Fragment:
    """The chains, sets and map elements of one Service (all its ports)."""
    fragment = Fragment()
    for sp in ports:
        _render_port(sp, fragment)
    return fragment


def _render_port(sp: ServicePort, out: Fragment) -> None:
    svc_chain = f"svc-{sp.id}"
    ext_chain = f"ext-{sp.id}"
    addresses = (sp.cluster_ip, *sp.external_ips)
    if not sp.endpoints:
        # Nothing to DNAT to: the filter hooks reject instead, so clients fail at once.
        for ip in addresses:
            out.add_element(NO_ENDPOINT_SERVICES, f"{ip} . {sp.protocol} . {sp.port}", f"goto {REJECT_CHAIN}")
        if sp.node_port:
            out.add_element(NO_ENDPOINT_NODEPORTS, f"{sp.protocol} . {sp.node_port}", f"goto {REJECT_CHAIN}")
        return
    for ep in sp.endpoints if sp.hairpin_endpoints is None else sp.hairpin_endpoints:
        # Hairpin: a pod reaching a Service that may pick the pod itself would get its replies
        # from itself to itself; masquerading sends them back through the node. One global set
        # of (service, client) pairs: marked when the client is an endpoint of that Service (and
        # on this node: the set grows with the node's pods, not with the cluster's).
        out.add_element(HAIRPIN, f"{sp.cluster_ip} . {sp.protocol} . {sp.port} . {ep.ip}", "")
    internal = sp.local_endpoints if sp.internal_local else sp.endpoints
    out.chains[svc_chain] = tuple(_pick(sp, internal, sp.slot, out))
    out.add_element(SERVICE_IPS, f"{sp.cluster_ip} . {sp.protocol} . {sp.port}", f"goto {svc_chain}")
    if sp.external:
        if sp.external_local:
            # Only endpoints on this node, so replies come back through it anyway: no masquerade,
            # and the endpoint sees the client's address (why users ask for Local).
            ext: tuple[str, ...] = ()
        else:
            # Traffic from outside may land on an endpoint on another node, whose replies would go
            # straight back to the client from the wrong address: masquerade it.
            ext = (f"meta mark set mark | {MASQUERADE_MARK:#x}",)
        if sp.split_policies:
            external = sp.local_endpoints if sp.external_local else sp.endpoints
            ext += tuple(_pick(sp, external, sp.external_slot, out))
        else:
            ext += (f"goto {svc_chain}",)
        out.chains[ext_chain] = ext
        for ip in sp.external_ips:
            out.add_element(SERVICE_IPS, f"{ip} . {sp.protocol} . {sp.port}", f"goto {ext_chain}")
        if sp.node_port:
            out.add_element(SERVICE_NODEPORTS, f"{sp.protocol} . {sp.node_port}", f"goto {ext_chain}")


def _pick(sp: ServicePort, endpoints: tuple[Endpoint, ...], slot: int, out: Fragment) -> list[str]:
    """The rules that DNAT to one of `endpoints`, picked at random (by affinity if the Service asks)."""
    if not endpoints:
        # Endpoints exist, but none here and the policy is Local: dropped, as kube-proxy does.
        return ["drop"]
    if sp.affinity_timeout:
        return _affinity_rules(sp, endpoints, out)
    # One rule whatever the number of endpoints: a random key in this block of the global
    # endpoints map, whose value is the endpoint. Changing endpoints changes elements, which
    # the kernel takes without re-checking the table (rules it re-checks: see docs).
    base = slot * SLOT_SIZE
    shard = f"endpoints-{sp.protocol}-{slot % ENDPOINT_SHARDS[sp.protocol]}"
    for i, ep in enumerate(endpoints[:SLOT_SIZE]):
        out.add_element(shard, str(base + i), f"{ep.ip} . {ep.port}")
    count = min(len(endpoints), SLOT_SIZE)
    offset = f" offset {base}" if base else ""
    return [f"meta l4proto {sp.protocol} dnat to numgen random mod {count}{offset} map @{shard}"]


def _affinity_rules(sp: ServicePort, endpoints: tuple[Endpoint, ...], out: Fragment) -> list[str]:
    """ClientIP affinity: a client seen recently sticks to the endpoint whose set remembers it.

    Which endpoint a rule picked must be known to remember it, so these Services (rare) pick by
    cascade, one rule per endpoint, as iptables' statistic rules do: endpoint i of N with
    probability 1/(N-i) when no earlier one was taken.
    """
    rules: list[str] = []
    remember: dict[Endpoint, str] = {}
    for ep in endpoints:
        aff = f"aff-{sp.id}/{ep.ip}/{ep.port}"
        out.sets[aff] = f"type ipv4_addr; flags dynamic,timeout; timeout {sp.affinity_timeout}s;"
        remember[ep] = f"update @{aff} {{ ip saddr }} "
        rules.append(f"ip saddr @{aff} {remember[ep]}{_dnat(sp, ep)}")
    last = len(endpoints) - 1
    for i, ep in enumerate(endpoints):
        pick = f"numgen random mod {last + 1 - i} == 0 " if i < last else ""
        rules.append(f"{pick}{remember[ep]}{_dnat(sp, ep)}")
    return rules


def _dnat(sp: ServicePort, ep: Endpoint) -> str:
    return f"meta l4proto {sp.protocol} dnat to {ep.ip}:{ep.port}"


# ---------------------------------------------------------------- transactions


def _element(key: str, value: str) -> str:
    # Set elements (the hairpin set) have no value; map elements do.
    return f"{key} : {value}" if value else key


def _declare(kind: str) -> str:
    return kind if kind.startswith("typeof ") else f"type {kind}"


BASE_CHAINS = ("services", "endpoints-check", REJECT_CHAIN, "prerouting", "output", "postrouting",
               "filter-input", "filter-forward", "filter-output")


def _base_objects(table: str = TABLE) -> list[str]:
    t = f"{FAMILY} {table}"
    lines = [f"add map {t} {name} {{ {_declare(kind)}; }}" for name, kind in _MAP_TYPES.items()]
    lines.append(f"add set {t} {HAIRPIN} {{ type ipv4_addr . inet_proto . inet_service . ipv4_addr; }}")
    return [
        *lines,
        f"add chain {t} services",
        f"add chain {t} endpoints-check",
        f"add chain {t} {REJECT_CHAIN}",
        f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
        f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}",
        # Before the nat hooks' DNAT would have rewritten the address (output) and before
        # anything accepts the packet (input, forward): the only place a reject is allowed.
        f"add chain {t} filter-input {{ type filter hook input priority -110; policy accept; }}",
        f"add chain {t} filter-forward {{ type filter hook forward priority -110; policy accept; }}",
        f"add chain {t} filter-output {{ type filter hook output priority -110; policy accept; }}",
    ]


def _nodeport_match(nodeport_addresses: Iterable[str]) -> str:
    """Which destinations are node ports: any local address but loopback, or only those in the given CIDRs.

    Loopback never (DNAT from 127/8 would need route_localnet). With CIDRs (kube-proxy's
    --nodeport-addresses) a node that shares its namespace with other networks, as a local cluster's
    master shares the host's, opens node ports on its own address only.
    """
    cidrs = ", ".join(nodeport_addresses)
    return (f"ip daddr {{ {cidrs} }} fib daddr type local" if cidrs
            else "fib daddr type local ip daddr != 127.0.0.0/8")


def _base_rules(table: str = TABLE, nodeport_addresses: Iterable[str] = ()) -> list[str]:
    t = f"{FAMILY} {table}"
    nodeports = _nodeport_match(nodeport_addresses)
    lines = [
        f"add rule {t} prerouting jump services",
        # Connections the node itself opens to a Service leave with the node's source address,
        # which pods may have no route back to (a master's default route, a node without one):
        # mark them for masquerade as kube-proxy does for sources outside the cluster CIDR. A
        # matched Service ends in dnat (terminal); the mark is taken off everything else.
        f"add rule {t} output meta mark set mark | {MASQUERADE_MARK:#x}",
        f"add rule {t} output jump services",
        f"add rule {t} output meta mark set mark & {~MASQUERADE_MARK & 0xFFFFFFFF:#x}",
        f"add rule {t} postrouting meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade",
        f"add rule {t} services ip daddr . meta l4proto . th dport . ip saddr @{HAIRPIN} "
        f"meta mark set mark | {MASQUERADE_MARK:#x}",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
        f"add rule {t} services {nodeports} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}",
        f"add rule {t} endpoints-check ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",
        f"add rule {t} endpoints-check {nodeports} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}",
        f"add rule {t} {REJECT_CHAIN} meta l4proto tcp reject with tcp reset",
        f"add rule {t} {REJECT_CHAIN} reject",
    ]
    lines += [f"add rule {t} filter-{hook} jump endpoints-check" for hook in ("input", "forward", "output")]
    return lines


def declarations(fragments: Iterable[Fragment], *, table: str = TABLE) -> str:
    """Start-up step 1: make sure the table and every chain, map and set exist.

    Only "add"s of empty objects, so it changes no packet's fate and may run while an
    older proxy's rules are live. Chains exist before step 2 names them, because the
    kernel is much slower to resolve a chain created in the same transaction.
    """
    t = f"{FAMILY} {table}"
    lines = [f"add table {t}", *_base_objects(table)]
    for frag in fragments:
        lines += [f"add set {t} {name} {{ {body} }}" for name, body in frag.sets.items()]
        lines += [f"add chain {t} {name}" for name in frag.chains]
    return "\n".join(lines) + "\n"


def full_sync(fragments: Iterable[Fragment], stale_chains: Iterable[str] = (), *, table: str = TABLE,
              nodeport_addresses: Iterable[str] = ()) -> str:
    """Start-up step 2, one atomic transaction: every rule and element replaced at once.

    `stale_chains` are chains found in the table that no fragment wants (left by an
    earlier run); they are emptied and deleted in the same transaction.
    """
    t = f"{FAMILY} {table}"
    fragments = list(fragments)
    lines = [f"flush table {t}", *(f"flush map {t} {name}" for name in _MAP_TYPES), f"flush set {t} {HAIRPIN}"]
    lines += [f"delete chain {t} {name}" for name in stale_chains]
    elements: dict[str, list[str]] = {}
    for frag in fragments:
        for map_name, items in frag.elements.items():
            elements.setdefault(map_name, []).extend(_element(k, v) for k, v in items.items())
    for frag in fragments:
        for name, rules in frag.chains.items():
            lines += [f"add rule {t} {name} {rule}" for rule in rules]
    # Hook chains and the other elements last, so nothing reaches the Service chains while
    # their rules go in and each rule is checked alone.
    lines += _base_rules(table, nodeport_addresses)
    for map_name, items_list in elements.items():
        if items_list:
            lines.append(f"add element {t} {map_name} {{ {', '.join(items_list)} }}")
    return "\n".join(lines) + "\n"


def fragment_diff(old: Fragment, new: Fragment, *, table: str = TABLE) -> str:
    """The transaction turning `old` into `new` (one Service's change); "" when they are equal."""
    if old == new:
        return ""
    t = f"{FAMILY} {table}"
    # Only what differs: an endpoint replaced is two elements of an endpoints map, which the
    # kernel takes without re-checking the rules (a changed rule costs a check of the table).
    lines: list[str] = []
    added: list[str] = []
    for map_name in sorted(set(old.elements) | set(new.elements)):
        before, after = old.elements.get(map_name, {}), new.elements.get(map_name, {})
        gone = [k for k, v in before.items() if after.get(k) != v]
        fresh = [_element(k, v) for k, v in after.items() if before.get(k) != v]
        if gone:
            lines.append(f"delete element {t} {map_name} {{ {', '.join(gone)} }}")
        if fresh:
            added.append(f"add element {t} {map_name} {{ {', '.join(fresh)} }}")
    lines += [f"add set {t} {name} {{ {body} }}" for name, body in new.sets.items() if name not in old.sets]
    lines += [f"add chain {t} {name}" for name in new.chains if name not in old.chains]
    for name, rules in new.chains.items():
        if old.chains.get(name) != rules:
            if name in old.chains:
                lines.append(f"flush chain {t} {name}")
            lines += [f"add rule {t} {name} {rule}" for rule in rules]
    # A chain may be deleted only once nothing jumps to it: flush every doomed chain, then delete.
    doomed = [name for name in old.chains if name not in new.chains]
    lines += [f"flush chain {t} {name}" for name in doomed]
    lines += [f"delete chain {t} {name}" for name in doomed]
    lines += [f"delete set {t} {name}" for name in old.sets if name not in new.sets]
    lines += added
    return "\n".join(lines) + "\n"

