"""Service clusterIPs and node ports are allocated by the apiserver at create time.

Given the real apiserver on etcd: concurrent creates never get the same IP or
port; a requested value is honoured when free and refused, clearly, when taken
or out of range; deleting a Service frees its values; an update to NodePort
gets node ports and a move back to ClusterIP gives them up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random

import pytest

from client import Client
from proto import core_pb2
from proto.errors import Invalid


def service(name: str, namespace: str, *, type_: str = "ClusterIP", cluster_ip: str = "",
            node_port: int = 0) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.type = type_
    svc.spec.selector["app"] = name
    svc.spec.cluster_ip = cluster_ip
    svc.spec.ports.add(port=80, node_port=node_port)
    return svc


def random_ip() -> str:
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.96.0.0")) + random.randint(1000, 1_000_000)))


async def test_concurrent_creates_get_unique_ips_and_ports(client: Client, namespace: str) -> None:
    created = await asyncio.gather(*(client.create(service(f"s{i}", namespace, type_="NodePort"))
                                     for i in range(60)))
    ips = [s.spec.cluster_ip for s in created]
    ports = [s.spec.ports[0].node_port for s in created]
    assert len(set(ips)) == 60 and len(set(ports)) == 60
    network = ipaddress.IPv4Network("10.96.0.0/12")
    assert all(ipaddress.IPv4Address(ip) in network for ip in ips)
    assert all(30000 <= p <= 32767 for p in ports)
    assert all(list(s.spec.cluster_ips) == [s.spec.cluster_ip] for s in created)


async def test_a_requested_ip_is_honoured_once(client: Client, namespace: str) -> None:
    ip = random_ip()
    first = await client.create(service("a", namespace, cluster_ip=ip))
    assert first.spec.cluster_ip == ip
    with pytest.raises(Invalid, match="provided IP is already allocated"):
        await client.create(service("b", namespace, cluster_ip=ip))
    with pytest.raises(Invalid, match="not in the valid range"):
        await client.create(service("c", namespace, cluster_ip="192.168.0.10"))
    # Deleting the Service frees the IP for the next one.
    await client.delete(core_pb2.Service, "a", namespace)
    again = await client.create(service("b", namespace, cluster_ip=ip))
    assert again.spec.cluster_ip == ip


async def test_concurrent_requests_for_one_node_port_have_one_winner(client: Client, namespace: str) -> None:
    port = random.randint(30000, 32767)
    results = await asyncio.gather(*(client.create(service(f"p{i}", namespace, type_="NodePort", node_port=port))
                                     for i in range(8)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, core_pb2.Service)]
    losers = [r for r in results if isinstance(r, Invalid)]
    if not winners:  # another test's Service got this port first: every request is refused
        assert len(losers) == 8
        return
    assert len(winners) == 1 and len(losers) == 7
    assert "provided port is already allocated" in str(losers[0])
    with pytest.raises(Invalid, match="not in the valid range"):
        await client.create(service("low", namespace, type_="NodePort", node_port=8080))


async def test_type_changes_take_and_give_back_node_ports(client: Client, namespace: str) -> None:
    svc = await client.create(service("web", namespace))
    assert svc.spec.ports[0].node_port == 0
    svc.spec.type = "NodePort"
    svc = await client.update(svc)
    port = svc.spec.ports[0].node_port
    assert 30000 <= port <= 32767
    svc.spec.type = "ClusterIP"
    svc.spec.ports[0].node_port = 0
    svc.spec.external_traffic_policy = ""
    await client.update(svc)
    taken = await client.create(service("other", namespace, type_="NodePort", node_port=port))
    assert taken.spec.ports[0].node_port == port
