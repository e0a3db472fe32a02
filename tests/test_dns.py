"""Cluster DNS against a real apiserver: a user's lookups over UDP and TCP, with dnslib's client.

Names outside the cluster go to a fake upstream started here on 127.0.0.1;
nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import cast

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped]

from client import Client
from client.retry import update_fresh
from controlplane.dns.server import DnsServer
from proto import core_pb2
from tests.slices_support import create_slices


class FakeUpstream(asyncio.DatagramProtocol):
    """Answers every A query with 192.0.2.1 (TEST-NET-1: documentation only)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        request = DNSRecord.parse(data)
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.1")))
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def dns(client: Client) -> AsyncIterator[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(FakeUpstream, local_addr=("127.0.0.1", 0))
    server = DnsServer(client, upstream=upstream.get_extra_info("sockname")[:2])
    address = await server.start("127.0.0.1", 0)
    try:
        yield address
    finally:
        await server.stop()
        upstream.close()


async def ask(address: tuple[str, int], name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    raw = await asyncio.to_thread(DNSRecord.question(name, qtype).send, address[0], address[1], tcp=tcp, timeout=3)
    return DNSRecord.parse(raw)


async def eventually(address: tuple[str, int], name: str, qtype: str = "A") -> DNSRecord:
    """The informer sees new objects a moment after they are created."""
    for _ in range(50):
        reply = await ask(address, name, qtype)
        if reply.header.rcode == RCODE.NOERROR and reply.rr:
            return reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"no answer for {name}")


async def create_service(client: Client, namespace: str, name: str, cluster_ip: str) -> None:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.cluster_ip = cluster_ip
    svc.spec.ports.add(name="http", port=80, protocol="TCP")
    await client.create(svc)


async def test_service_a_srv_headless_nxdomain_and_forwarding(
        dns: tuple[str, int], client: Client, namespace: str) -> None:
    cluster_ip = f"10.96.{random.randint(200, 250)}.{random.randint(1, 254)}"
    await create_service(client, namespace, "web", cluster_ip)
    await create_service(client, namespace, "db", "None")
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = "db", namespace
    subset = ep.subsets.add()
    subset.addresses.add(ip="10.244.1.5")
    subset.addresses.add(ip="10.244.2.7")
    subset.not_ready_addresses.add(ip="10.244.3.3")
    subset.ports.add(name="http", port=80, protocol="TCP")
    await create_slices(client, ep)

    web = f"web.{namespace}.svc.cluster.local"
    reply = await eventually(dns, web)
    assert [str(rr.rdata) for rr in reply.rr] == [cluster_ip]
    assert reply.header.aa == 1

    tcp_reply = await ask(dns, web, tcp=True)
    assert [str(rr.rdata) for rr in tcp_reply.rr] == [cluster_ip]

    srv = await ask(dns, f"_http._tcp.{web}", "SRV")
    assert [(rr.rdata.port, str(rr.rdata.target)) for rr in srv.rr] == [(80, web + ".")]

    headless = await eventually(dns, f"db.{namespace}.svc.cluster.local")
    assert sorted(str(rr.rdata) for rr in headless.rr) == ["10.244.1.5", "10.244.2.7"], "ready pods only"

    for unknown in (f"nope.{namespace}.svc.cluster.local", "x.cluster.local", f"_ftp._tcp.{web}"):
        assert (await ask(dns, unknown)).header.rcode == RCODE.NXDOMAIN, unknown

    outside = await ask(dns, "example.test")
    assert [str(rr.rdata) for rr in outside.rr] == ["192.0.2.1"], "forwarded to the upstream"


async def _pod_with_hostname(client: Client, namespace: str, name: str, subdomain: str, ip: str,
                             *, ready: bool) -> None:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, namespace
    pod.spec.hostname, pod.spec.subdomain = name, subdomain
    pod.spec.containers.add(name="app", image="registry.k8s.io/pause:3.9")
    created = await client.create(pod)
    created.status.phase = "Running"
    created.status.pod_ip = ip
    created.status.pod_ips.add(ip=ip)
    created.status.conditions.add(type="Ready", status="True" if ready else "False")
    await client.update_status(created)


async def test_a_pods_hostname_under_its_headless_service(dns: tuple[str, int], client: Client,
                                                          namespace: str) -> None:
    """`web-0.nginx.<ns>.svc.cluster.local`: a StatefulSet's pod (any pod with hostname + subdomain)."""
    await create_service(client, namespace, "nginx", "None")
    await create_service(client, namespace, "clustered", f"10.96.{random.randint(200, 250)}.{random.randint(1, 254)}")
    await _pod_with_hostname(client, namespace, "web-0", "nginx", "10.244.7.10", ready=True)
    await _pod_with_hostname(client, namespace, "web-1", "nginx", "10.244.7.11", ready=False)
    await _pod_with_hostname(client, namespace, "api-0", "clustered", "10.244.7.12", ready=True)

    reply = await eventually(dns, f"web-0.nginx.{namespace}.svc.cluster.local")
    assert [str(rr.rdata) for rr in reply.rr] == ["10.244.7.10"]
    assert reply.header.aa == 1
    upper = await ask(dns, f"WEB-0.nginx.{namespace}.svc.cluster.local", tcp=True)
    assert [str(rr.rdata) for rr in upper.rr] == ["10.244.7.10"], "names are case-insensitive"
    for missing in (f"web-1.nginx.{namespace}.svc.cluster.local",      # not Ready
                    f"api-0.clustered.{namespace}.svc.cluster.local",  # its Service is not headless
                    f"web-9.nginx.{namespace}.svc.cluster.local",      # no such pod
                    f"web-0.nope.{namespace}.svc.cluster.local"):      # no such Service
        assert (await ask(dns, missing)).header.rcode == RCODE.NXDOMAIN, missing

    # A Service that publishes not-ready addresses names its not-ready pods too.
    def publish(svc: core_pb2.Service) -> None:
        svc.spec.publish_not_ready_addresses = True

    await update_fresh(client, core_pb2.Service, "nginx", namespace, publish)
    reply = await eventually(dns, f"web-1.nginx.{namespace}.svc.cluster.local")
    assert [str(rr.rdata) for rr in reply.rr] == ["10.244.7.11"]
