"""The kubelet's node routes (host-gw) against the real kernel, in two network namespaces made here.

Given two "nodes" (namespaces on one veth pair, 192.168.171.1 and .2) each with a
"pod" address from its podCIDR, and their Nodes in the real apiserver, when each
runs the kubelet's NodeRoutes controller, then each holds a route to the other's
podCIDR via the other's InternalIP and the pods reach each other; a Node added
later gets its route, a Node deleted loses it, a stale route of ours from an
earlier run goes at start, and a route someone else owns is never touched.

Traffic and routes stay inside the namespaces created here, removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from client import Client
from client.informer import InformerFactory
from nodeagent.kubelet.routes import ROUTE_PROTOCOL, NodeRoute, NodeRoutes, desired_route, routes_possible
from proto import core_pb2
from proto.errors import NotFound

LINK = ipaddress.IPv4Network("192.168.171.0/24")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("busybox"),
                                reason="needs root, ip and busybox (ping) to build network namespaces")


def make_node(name: str, pod_cidr: str, internal_ip: str) -> core_pb2.Node:
    node = core_pb2.Node()
    node.metadata.name = name
    node.spec.pod_cidr = pod_cidr
    if pod_cidr:
        node.spec.pod_cidrs.append(pod_cidr)
    if internal_ip:
        node.status.addresses.add(type="InternalIP", address=internal_ip)
    return node


# ---------------------------------------------------------------- the pure decision

def test_desired_route_is_the_other_nodes_podcidr_via_its_internal_ip() -> None:
    other = make_node("b", "10.71.2.0/24", "192.168.171.2")
    assert desired_route(other, own_name="a", link=LINK) == NodeRoute("10.71.2.0/24", "192.168.171.2")


@pytest.mark.parametrize(("node", "why"), [
    (None, "deleted"),
    (make_node("a", "10.71.1.0/24", "192.168.171.1"), "this node itself"),
    (make_node("b", "", "192.168.171.2"), "no podCIDR yet"),
    (make_node("b", "10.71.2.0/24", ""), "no InternalIP yet"),
    (make_node("b", "10.71.2.0/24", "10.99.0.2"), "not on our link: host-gw cannot reach it"),
    (make_node("b", "fd00:71::/64", "192.168.171.2"), "IPv6 podCIDR"),
])
def test_no_route(node: core_pb2.Node | None, why: str) -> None:
    assert desired_route(node, own_name="a", link=LINK) is None, why


def test_the_kubelet_keeps_routes_unless_told_not_to() -> None:
    from nodeagent.kubelet.main import parse_args
    node = ["--node-name", "n1", "--node-ip", "192.168.171.1"]
    assert parse_args(node).node_routes is True
    assert parse_args([*node, "--no-node-routes"]).node_routes is False
    assert not routes_possible("127.0.0.1") and routes_possible("192.168.171.1")


# ---------------------------------------------------------------- two namespaces

def ip(*args: str, netns: str, check: bool = True) -> str:
    done = subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"ip -n {netns} {' '.join(args)}: {done.stderr}")
    return done.stdout


def routes(netns: str) -> dict[str, str]:
    """`ip route` of the namespace's main table: destination → the rest of the line."""
    lines = ip("-o", "route", "show", "table", "main", netns=netns).splitlines()
    return {line.split()[0]: line for line in lines}


def ping(netns: str, source: str, target: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "1", "-I", source, target],
                          capture_output=True).returncode == 0


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f}s")
        await asyncio.sleep(0.05)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    a, b = f"rt-a-{tag}", f"rt-b-{tag}"
    try:
        for i, ns in enumerate((a, b), start=1):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            ip("link", "set", "lo", "up", netns=ns)
            # The node's one "pod": an address from its podCIDR (on lo: no bridge needed to prove routing).
            ip("addr", "add", f"10.171.{i}.10/32", "dev", "lo", netns=ns)
        ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b, netns=a)
        for i, ns in enumerate((a, b), start=1):
            ip("addr", "add", f"192.168.171.{i}/24", "dev", "eth0", netns=ns)
            ip("link", "set", "eth0", "up", netns=ns)
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
async def node_names(client: Client) -> AsyncIterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    names = {"a": f"rt-a-{tag}", "b": f"rt-b-{tag}", "c": f"rt-c-{tag}"}
    try:
        yield names
    finally:
        for name in names.values():
            with contextlib.suppress(NotFound):
                await client.delete(core_pb2.Node, name)


@needs_root
async def test_nodes_route_to_each_others_pods(client: Client, namespaces: tuple[str, str],
                                               node_names: dict[str, str]) -> None:
    ns_a, ns_b = namespaces
    a, b, c = node_names["a"], node_names["b"], node_names["c"]
    # Given Nodes a and b in the API, and in a's namespace, before its kubelet starts, a stale route of
    # ours (a Node deleted while it was down) and a route of someone else's (protocol static).
    for name, i in ((a, 1), (b, 2)):
        await client.create(make_node(name, f"10.171.{i}.0/24", f"192.168.171.{i}"))
    ip("route", "add", "10.171.8.0/24", "via", "192.168.171.8", "proto", str(ROUTE_PROTOCOL), netns=ns_a)
    # (and, through another interface, one of protocol 77 too: another cluster's kubelet on another bridge)
    ip("link", "add", "other0", "type", "veth", "peer", "name", "other1", netns=ns_a)
    ip("addr", "add", "192.168.172.1/24", "dev", "other0", netns=ns_a)
    ip("link", "set", "other0", "up", netns=ns_a)
    ip("route", "add", "10.172.5.0/24", "via", "192.168.172.5", "proto", str(ROUTE_PROTOCOL), netns=ns_a)
    ip("route", "add", "10.171.9.0/24", "via", "192.168.171.9", "proto", "static", netns=ns_a)
    # (and one of someone else's to the podCIDR of Node c, which joins later)
    ip("route", "add", "10.171.3.0/24", "via", "192.168.171.99", "proto", "static", netns=ns_a)
    assert not ping(ns_a, "10.171.1.10", "10.171.2.10"), "pods reach each other before any route"

    # When each node runs the controller in its namespace,
    factory = InformerFactory(client)
    nodes = factory.informer(core_pb2.Node)
    # (a's resyncs every half second, so a route deleted by hand must come back soon.)
    controllers = [NodeRoutes(nodes, node_name=a, node_ip="192.168.171.1", netns=ns_a, resync_period=0.5),
                   NodeRoutes(nodes, node_name=b, node_ip="192.168.171.2", netns=ns_b)]
    factory.start()
    tasks = [asyncio.create_task(c.run()) for c in controllers]
    try:
        # then each routes the other's podCIDR via the other's InternalIP, tagged with our protocol,
        await eventually(lambda: "10.171.2.0/24" in routes(ns_a) and "10.171.1.0/24" in routes(ns_b),
                         "routes to the other node's pods")
        assert f"via 192.168.171.2 dev eth0 proto {ROUTE_PROTOCOL}" in routes(ns_a)["10.171.2.0/24"]
        assert f"via 192.168.171.1 dev eth0 proto {ROUTE_PROTOCOL}" in routes(ns_b)["10.171.1.0/24"]
        assert "10.171.1.0/24" not in routes(ns_a), "a node routes its own podCIDR locally, not via itself"
        # and pods reach each other across the nodes, with their own addresses;
        assert ping(ns_a, "10.171.1.10", "10.171.2.10")
        assert ping(ns_b, "10.171.2.10", "10.171.1.10")
        # the stale route of ours is gone, the static one is still there.
        await eventually(lambda: "10.171.8.0/24" not in routes(ns_a), "stale route removed")
        assert "proto static" in routes(ns_a)["10.171.9.0/24"]
        assert "10.172.5.0/24" in routes(ns_a), "another interface's routes belong to another kubelet"

        # When Node c joins, b routes to its pods (a keeps the route it had: not ours),
        started = time.monotonic()
        await client.create(make_node(c, "10.171.3.0/24", "192.168.171.3"))
        await eventually(lambda: "10.171.3.0/24" in routes(ns_b), "route to the new node's pods")
        added = time.monotonic() - started
        assert f"via 192.168.171.3 dev eth0 proto {ROUTE_PROTOCOL}" in routes(ns_b)["10.171.3.0/24"]
        assert "via 192.168.171.99 dev eth0 proto static" in routes(ns_a)["10.171.3.0/24"], "not ours: left alone"

        # and when it leaves, its route goes (and nobody else's).
        started = time.monotonic()
        await client.delete(core_pb2.Node, c)
        await eventually(lambda: "10.171.3.0/24" not in routes(ns_b), "route to the deleted node's pods removed")
        removed = time.monotonic() - started
        assert "10.171.2.0/24" in routes(ns_a) and "10.171.9.0/24" in routes(ns_a)
        assert "proto static" in routes(ns_a)["10.171.3.0/24"]
        assert added < 2 and removed < 2, (added, removed)

        # A route deleted by hand comes back at the next resync (level-triggered).
        ip("route", "del", "10.171.2.0/24", netns=ns_a)
        await eventually(lambda: "10.171.2.0/24" in routes(ns_a), "hand-deleted route restored")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        factory.stop()
    # Routes stay when the kubelet stops: a restarting kubelet must not cut pod traffic.
    assert "10.171.2.0/24" in routes(ns_a)


@needs_root
async def test_loopback_node_keeps_no_routes(client: Client, node_names: dict[str, str]) -> None:
    """A test kubelet in the host's namespace (InternalIP 127.0.0.1) must never touch the host's routes."""
    factory = InformerFactory(client)
    controller = NodeRoutes(factory.informer(core_pb2.Node), node_name=node_names["a"], node_ip="127.0.0.1")
    await asyncio.wait_for(controller.run(), timeout=2)  # returns at once, having done nothing
    assert controller.applied == {}


@needs_root
async def test_a_node_ip_on_no_interface_waits_instead_of_failing(client: Client, namespaces: tuple[str, str],
                                                                   node_names: dict[str, str]) -> None:
    """A kubelet whose node IP is not (yet) on an interface keeps looking; the routes come once it is."""
    ns_a, _ = namespaces
    await client.create(make_node(node_names["b"], "10.171.2.0/24", "192.168.171.2"))
    factory = InformerFactory(client)
    controller = NodeRoutes(factory.informer(core_pb2.Node), node_name=node_names["a"], node_ip="192.168.171.50",
                            netns=ns_a, resync_period=0.3)
    factory.start()
    task = asyncio.create_task(controller.run())
    try:
        await asyncio.sleep(0.5)
        assert not task.done(), "the controller keeps running"
        assert "10.171.2.0/24" not in routes(ns_a)
        ip("addr", "add", "192.168.171.50/24", "dev", "eth0", netns=ns_a)
        await eventually(lambda: "10.171.2.0/24" in routes(ns_a), "the route once the address is there")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        factory.stop()
