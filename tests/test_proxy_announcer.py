"""LoadBalancer announcing: one node holds the address, another takes over when it stops.

Given two "nodes" (network namespaces this test creates, joined by a veth pair on
10.251.60.0/24) each running an announcer, and a LoadBalancer Service whose
address is in that subnet, then exactly one node holds the /32; when that node's
announcer stops, the other holds it within a few seconds (a Lease of 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from client import Client
from nodeagent.proxy.announcer import Announcer, LeaseTiming, interface_of
from proto import core_pb2

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root for namespaces")

LB_IP = "10.251.60.200"


def sh(*args: str) -> None:
    subprocess.run(args, capture_output=True, text=True, check=True)


@pytest.fixture
def nodes() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    a, b = f"fltla-{tag}", f"fltlb-{tag}"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
        for ns, ip in ((a, "10.251.60.1"), (b, "10.251.60.2")):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def holds(netns: str) -> bool:
    out = subprocess.run(["ip", "-n", netns, "-o", "-4", "addr", "show", "dev", "eth0"],
                         capture_output=True, text=True, check=False).stdout
    return f" {LB_IP}/32 " in out


async def wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_one_node_announces_and_another_takes_over(
        nodes: tuple[str, str], client: Client, namespace: str) -> None:
    a, b = nodes
    assert interface_of("10.251.60.1", netns=a) == "eth0"
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "web", namespace
    svc.spec.type = "LoadBalancer"
    svc.spec.cluster_ip = f"10.96.{random.randint(200, 250)}.{random.randint(1, 254)}"
    svc.spec.ports.add(port=80, protocol="TCP", node_port=random.randint(30000, 32767))
    svc = await client.create(svc)
    svc.status.load_balancer.ingress.add(ip=LB_IP)
    await client.update_status(svc)

    timing = LeaseTiming(duration=2, renew_deadline=1.5, retry_period=0.3)
    tasks = {ns: asyncio.create_task(Announcer(client, node_name=ns, interface="eth0", netns=ns, timing=timing,
                                               namespace=namespace).run()) for ns in nodes}
    try:
        await wait_for(lambda: holds(a) or holds(b), 10)
        await asyncio.sleep(1)
        assert holds(a) != holds(b), "exactly one node holds the address"
        leader, standby = (a, b) if holds(a) else (b, a)

        tasks[leader].cancel()  # the node's agent stops: it stops renewing the Lease
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[leader]
        assert not holds(leader)
        started = time.monotonic()
        await wait_for(lambda: holds(standby), 10)
        assert time.monotonic() - started < 6, "taken over about one lease duration later"
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert not holds(a) and not holds(b), "addresses withdrawn when the announcers stop"


async def test_external_traffic_policy_local_is_announced_by_a_node_with_an_endpoint(
        nodes: tuple[str, str], client: Client, namespace: str) -> None:
    """Only node b runs an endpoint: b announces, whoever starts first; when the endpoint moves to a, a does."""
    a, b = nodes
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "local", namespace
    svc.spec.type, svc.spec.external_traffic_policy = "LoadBalancer", "Local"
    svc.spec.cluster_ip = f"10.96.{random.randint(200, 250)}.{random.randint(1, 254)}"
    svc.spec.ports.add(port=80, protocol="TCP", node_port=random.randint(30000, 32767))
    svc = await client.create(svc)
    svc.status.load_balancer.ingress.add(ip=LB_IP)
    await client.update_status(svc)
    eps = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    eps.metadata.name, eps.metadata.namespace = "local", namespace
    subset = eps.subsets.add()
    subset.addresses.add(ip="10.244.2.5", node_name=b)
    subset.ports.add(port=80, protocol="TCP")
    eps = await client.create(eps)

    timing = LeaseTiming(duration=2, renew_deadline=1.5, retry_period=0.3)
    tasks = {ns: asyncio.create_task(Announcer(client, node_name=ns, interface="eth0", netns=ns, timing=timing,
                                               namespace=namespace).run()) for ns in nodes}
    try:
        await wait_for(lambda: holds(b), 10)
        await asyncio.sleep(1)
        assert not holds(a), "a node without an endpoint would drop the traffic: it does not stand"
        eps.subsets[0].addresses[0].node_name = a
        await client.update(eps)
        await wait_for(lambda: holds(a) and not holds(b), 10)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
