"""The proxy's renderer, as pure functions: Services + EndpointSlices in, nft text out."""

from __future__ import annotations

import dataclasses

from nodeagent.proxy import rules
from proto import core_pb2, discovery_pb2
from tests.slices_support import slices_from


def make_service(*, cluster_ip: str = "10.96.0.50", type_: str = "ClusterIP", node_port: int = 0,
                 affinity: bool = False, lb_ip: str = "") -> core_pb2.Service:
    svc = core_pb2.Service()
    svc.metadata.namespace, svc.metadata.name = "default", "web"
    svc.spec.cluster_ip, svc.spec.type = cluster_ip, type_
    svc.spec.ports.add(name="http", port=80, target_port="http", protocol="TCP", node_port=node_port)
    if affinity:
        svc.spec.session_affinity = "ClientIP"
        svc.spec.session_affinity_config.client_ip.timeout_seconds = 60
    if lb_ip:
        svc.status.load_balancer.ingress.add(ip=lb_ip)
    return svc


def make_endpoints(ready: list[str], not_ready: tuple[str, ...] = ()) -> list[discovery_pb2.EndpointSlice]:
    return slices_from(v1_endpoints(ready, not_ready))


def v1_endpoints(ready: list[str], not_ready: tuple[str, ...] = ()) -> core_pb2.Endpoints:
    ep = core_pb2.Endpoints()
    ep.metadata.namespace, ep.metadata.name = "default", "web"
    subset = ep.subsets.add()
    for ip in ready:
        subset.addresses.add(ip=ip)
    for ip in not_ready:
        subset.not_ready_addresses.add(ip=ip)
    subset.ports.add(name="http", port=8080, protocol="TCP")
    return ep


def test_ready_endpoints_only_matched_by_port_name() -> None:
    [sp] = rules.service_ports(make_service(), make_endpoints(["10.244.1.9", "10.244.1.5"], ("10.244.2.2",)))
    assert sp.endpoints == (rules.Endpoint("10.244.1.5", 8080), rules.Endpoint("10.244.1.9", 8080))
    assert sp.id == "default/web/tcp/http"


def test_headless_and_external_name_get_no_rules() -> None:
    assert rules.service_ports(make_service(cluster_ip="None"), make_endpoints(["10.244.1.5"])) == []
    assert rules.service_ports(make_service(cluster_ip="", type_="ExternalName"), None) == []


def test_cluster_ip_picks_a_random_key_in_its_block_of_the_endpoints_map() -> None:
    [sp] = rules.service_ports(make_service(), make_endpoints(["10.244.1.5", "10.244.1.6", "10.244.1.7"]))
    frag = rules.render_service([dataclasses.replace(sp, slot=257)])
    base = 257 * rules.SLOT_SIZE
    shard = f"endpoints-tcp-{257 % rules.ENDPOINT_SHARDS['tcp']}"
    assert frag.elements[rules.SERVICE_IPS] == {"10.96.0.50 . tcp . 80": "goto svc-default/web/tcp/http"}
    assert frag.elements[shard] == {str(base): "10.244.1.5 . 8080", str(base + 1): "10.244.1.6 . 8080",
                                    str(base + 2): "10.244.1.7 . 8080"}
    assert frag.chains["svc-default/web/tcp/http"] == (
        f"meta l4proto tcp dnat to numgen random mod 3 offset {base} map @{shard}",)
    # Hairpin: a client that is an endpoint of the Service is masqueraded.
    assert frag.elements[rules.HAIRPIN] == {f"10.96.0.50 . tcp . 80 . 10.244.1.{i}": "" for i in (5, 6, 7)}


def test_affinity_picks_by_cascade_with_equal_odds() -> None:
    svc = make_service(affinity=True)
    frag = rules.render_service(rules.service_ports(svc, make_endpoints(["10.244.1.5", "10.244.1.6", "10.244.1.7"])))
    chain = frag.chains["svc-default/web/tcp/http"]
    aff = "aff-default/web/tcp/http/10.244.1.{}/8080"
    # 1/3, then 1/2 of the rest, then the rest: each endpoint 1/3.
    assert chain[3:] == (
        f"numgen random mod 3 == 0 update @{aff.format(5)} {{ ip saddr }} meta l4proto tcp dnat to 10.244.1.5:8080",
        f"numgen random mod 2 == 0 update @{aff.format(6)} {{ ip saddr }} meta l4proto tcp dnat to 10.244.1.6:8080",
        f"update @{aff.format(7)} {{ ip saddr }} meta l4proto tcp dnat to 10.244.1.7:8080")


def test_node_port_and_load_balancer_go_through_the_masquerading_chain() -> None:
    svc = make_service(type_="LoadBalancer", node_port=30080, lb_ip="10.251.7.200")
    frag = rules.render_service(rules.service_ports(svc, make_endpoints(["10.244.1.5"])))
    ext = "goto ext-default/web/tcp/http"
    assert frag.elements[rules.SERVICE_NODEPORTS] == {"tcp . 30080": ext}
    assert frag.elements[rules.SERVICE_IPS]["10.251.7.200 . tcp . 80"] == ext
    assert frag.chains["ext-default/web/tcp/http"] == ("meta mark set mark | 0x4000", "goto svc-default/web/tcp/http")


def test_no_endpoints_rejects() -> None:
    frag = rules.render_service(rules.service_ports(make_service(type_="NodePort", node_port=30080), None))
    assert frag.chains == {}
    assert frag.elements == {
        rules.NO_ENDPOINT_SERVICES: {"10.96.0.50 . tcp . 80": "goto reject-chain"},
        rules.NO_ENDPOINT_NODEPORTS: {"tcp . 30080": "goto reject-chain"},
    }


def test_client_ip_affinity_uses_a_timed_set_per_endpoint() -> None:
    frag = rules.render_service(rules.service_ports(make_service(affinity=True), make_endpoints(["10.244.1.5"])))
    aff = "aff-default/web/tcp/http/10.244.1.5/8080"
    assert frag.sets == {aff: "type ipv4_addr; flags dynamic,timeout; timeout 60s;"}
    assert f"ip saddr @{aff} update @{aff} {{ ip saddr }} meta l4proto tcp dnat to 10.244.1.5:8080" in \
        frag.chains["svc-default/web/tcp/http"]


def test_diff_of_equal_fragments_is_empty_and_removal_deletes_everything() -> None:
    frag = rules.render_service(rules.service_ports(make_service(), make_endpoints(["10.244.1.5"])))
    assert rules.fragment_diff(frag, frag) == ""
    gone = rules.fragment_diff(frag, rules.Fragment()).splitlines()
    assert "delete element ip flotilla-proxy service-ips { 10.96.0.50 . tcp . 80 }" in gone
    assert gone[-1] == "delete chain ip flotilla-proxy svc-default/web/tcp/http"


def test_endpoint_change_touches_only_map_elements() -> None:
    old = rules.render_service(rules.service_ports(make_service(), make_endpoints(["10.244.1.5", "10.244.1.6"])))
    new = rules.render_service(rules.service_ports(make_service(), make_endpoints(["10.244.1.5", "10.244.1.7"])))
    diff = rules.fragment_diff(old, new).splitlines()
    assert diff == [
        "delete element ip flotilla-proxy endpoints-tcp-0 { 1 }",
        "delete element ip flotilla-proxy hairpin { 10.96.0.50 . tcp . 80 . 10.244.1.6 }",
        "add element ip flotilla-proxy endpoints-tcp-0 { 1 : 10.244.1.7 . 8080 }",
        "add element ip flotilla-proxy hairpin { 10.96.0.50 . tcp . 80 . 10.244.1.7 }",
    ], "no rule rewritten: the kernel need not re-check the table"


def test_scaling_rewrites_the_service_rule() -> None:
    old = rules.render_service(rules.service_ports(make_service(), make_endpoints(["10.244.1.5"])))
    new = rules.render_service(rules.service_ports(make_service(), make_endpoints(["10.244.1.5", "10.244.1.6"])))
    diff = rules.fragment_diff(old, new)
    assert "flush chain ip flotilla-proxy svc-default/web/tcp/http" in diff
    assert "numgen random mod 2 map @endpoints-tcp-0" in diff
    assert "delete chain" not in diff


def test_full_sync_hooks_come_last() -> None:
    frag = rules.render_service(rules.service_ports(make_service(), make_endpoints(["10.244.1.5"])))
    text = rules.full_sync([frag], ["svc-old"]).splitlines()
    assert text[0] == "flush table ip flotilla-proxy"
    assert "delete chain ip flotilla-proxy svc-old" in text
    assert text.index("add rule ip flotilla-proxy prerouting jump services") > \
        text.index("add rule ip flotilla-proxy svc-default/web/tcp/http "
                   "meta l4proto tcp dnat to numgen random mod 1 map @endpoints-tcp-0")
    decl = rules.declarations([frag])
    assert "add chain ip flotilla-proxy svc-default/web/tcp/http" in decl


def endpoints_on_nodes(placed: dict[str, str]) -> list[discovery_pb2.EndpointSlice]:
    """Ready endpoints, each with the node it runs on (IP → node name)."""
    ep = v1_endpoints([])
    for ip, node in placed.items():
        ep.subsets[0].addresses.add(ip=ip, node_name=node)
    return slices_from(ep)


def test_external_traffic_policy_local_keeps_external_traffic_on_this_node_unmasqueraded() -> None:
    svc = make_service(type_="NodePort", node_port=30080)
    svc.spec.external_traffic_policy = "Local"
    eps = endpoints_on_nodes({"10.244.1.5": "node-1", "10.244.2.5": "node-2"})
    [sp] = rules.service_ports(svc, eps, "node-1")
    assert sp.local_endpoints == (rules.Endpoint("10.244.1.5", 8080),)
    assert sp.slot_ids == ("default/web/tcp/http", "default/web/tcp/http/external")
    frag = rules.render_service([dataclasses.replace(sp, slot=0, external_slot=1)])
    # ClusterIP traffic still reaches both endpoints; NodePort traffic only the local one, with no masquerade mark.
    assert frag.chains["svc-default/web/tcp/http"] == (
        "meta l4proto tcp dnat to numgen random mod 2 map @endpoints-tcp-0",)
    assert frag.chains["ext-default/web/tcp/http"] == (
        f"meta l4proto tcp dnat to numgen random mod 1 offset {rules.SLOT_SIZE} map @endpoints-tcp-1",)
    assert frag.elements["endpoints-tcp-1"] == {str(rules.SLOT_SIZE): "10.244.1.5 . 8080"}
    # Only this node's pod can hairpin here: the set holds it alone.
    assert frag.elements[rules.HAIRPIN] == {"10.96.0.50 . tcp . 80 . 10.244.1.5": ""}
    # A node with no endpoint of its own drops external traffic rather than forwarding it.
    [remote] = rules.service_ports(svc, eps, "node-3")
    assert rules.render_service([remote]).chains["ext-default/web/tcp/http"] == ("drop",)


def test_internal_traffic_policy_local_keeps_cluster_ip_traffic_on_this_node() -> None:
    svc = make_service(type_="NodePort", node_port=30080)
    svc.spec.internal_traffic_policy = "Local"
    eps = endpoints_on_nodes({"10.244.1.5": "node-1", "10.244.2.5": "node-2", "10.244.2.6": "node-2"})
    [sp] = rules.service_ports(svc, eps, "node-2")
    frag = rules.render_service([dataclasses.replace(sp, slot=0, external_slot=1)])
    assert frag.chains["svc-default/web/tcp/http"] == (
        "meta l4proto tcp dnat to numgen random mod 2 map @endpoints-tcp-0",)
    assert frag.elements["endpoints-tcp-0"] == {"0": "10.244.2.5 . 8080", "1": "10.244.2.6 . 8080"}
    # External traffic (Cluster policy) is masqueraded and still reaches all three.
    assert frag.chains["ext-default/web/tcp/http"] == (
        "meta mark set mark | 0x4000",
        f"meta l4proto tcp dnat to numgen random mod 3 offset {rules.SLOT_SIZE} map @endpoints-tcp-1")
    [elsewhere] = rules.service_ports(svc, eps, "node-3")
    assert rules.render_service([elsewhere]).chains["svc-default/web/tcp/http"] == ("drop",)
    # Both Local: one set of endpoints, one block, and the external path shares the ClusterIP chain.
    svc.spec.external_traffic_policy = "Local"
    [both] = rules.service_ports(svc, eps, "node-2")
    assert both.slot_ids == ("default/web/tcp/http",)
    assert rules.render_service([both]).chains["ext-default/web/tcp/http"] == ("goto svc-default/web/tcp/http",)
