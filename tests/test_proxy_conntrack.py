"""Which conntrack flows the proxy forgets when a Service changes (pure; the kernel side is in test_proxy_netns)."""

from __future__ import annotations

from nodeagent.proxy.conntrack import StaleFlow, stale_flows
from nodeagent.proxy.rules import Endpoint, ServicePort


def port(protocol: str, *ips: str, node_port: int = 0, external: tuple[str, ...] = ()) -> ServicePort:
    return ServicePort(namespace="ns", name="dns", port_name="dns", protocol=protocol, cluster_ip="10.96.0.10",
                       port=53, node_port=node_port, external_ips=external,
                       endpoints=tuple(Endpoint(ip, 5353) for ip in ips))


def test_a_removed_udp_endpoint_loses_its_flows_to_every_service_address() -> None:
    old = [port("udp", "10.244.1.2", "10.244.2.2", node_port=30053, external=("192.168.56.200",))]
    new = [port("udp", "10.244.2.2", node_port=30053, external=("192.168.56.200",))]
    assert stale_flows(old, new) == [
        StaleFlow("10.244.1.2", "10.96.0.10", 53),
        StaleFlow("10.244.1.2", "192.168.56.200", 53),
        StaleFlow("10.244.1.2", "", 30053),  # NodePort: to any local address
    ]
    assert StaleFlow("10.244.1.2", "", 30053).argv() == [
        "conntrack", "-D", "-p", "udp", "--orig-port-dst", "30053", "--dst-nat", "10.244.1.2"]


def test_a_deleted_service_forgets_all_its_udp_flows() -> None:
    assert {f.endpoint_ip for f in stale_flows([port("udp", "10.244.1.2", "10.244.2.2")], [])} == {
        "10.244.1.2", "10.244.2.2"}


def test_nothing_to_forget_for_tcp_kept_or_added_endpoints() -> None:
    assert stale_flows([port("tcp", "10.244.1.2")], []) == [], "TCP flows end by themselves"
    assert stale_flows([port("udp", "10.244.1.2")], [port("udp", "10.244.1.2", "10.244.2.2")]) == []
