"""The proxy end to end: real kernel rules in network namespaces this test creates.

Given two "pods" (namespaces running a small HTTP server) wired to a "node"
namespace, and Services + EndpointSlices in the real apiserver, when the proxier runs
for that node, then a client on the node reaches both pods through the
ClusterIP (TCP and UDP), reaches them through the NodePort on the node's address, sticks to
one pod with ClientIP affinity, is refused at once by a Service without
endpoints, and `flotilla-proxy --cleanup` leaves no table behind.

Traffic stays inside the namespaces created here (10.251.0.0/16, the service
IPs), all of which are removed afterwards, on failure too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import Client
from nodeagent.proxy.proxier import Proxier
from proto import core_pb2
from tests.controllers_support import running
from tests.slices_support import create_slices, replace_slices

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("curl"),
    reason="needs root, nft and curl to build network namespaces")

NODE_IP = "10.251.100.1"
POD_IPS = ("10.251.1.2", "10.251.2.2")
POD_PORT = 8080
UDP_PORT = 5353
# Answers every datagram with the pod's name (as a DNS server would, over UDP).
UDP_SERVER = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], {UDP_PORT}))
while True:
    data, peer = s.recvfrom(512)
    s.sendto(sys.argv[2].encode(), peer)
"""
UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b"?", (sys.argv[1], 53))
print(s.recvfrom(512)[0].decode())
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


@dataclass
class Sandbox:
    node: str
    pods: tuple[str, ...]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    tag = uuid.uuid4().hex[:6]
    box = Sandbox(node=f"fltn-{tag}", pods=(f"fltpa-{tag}", f"fltpb-{tag}"))
    servers: list[subprocess.Popen[bytes]] = []
    try:
        sh("ip", "netns", "add", box.node)
        sh("ip", "-n", box.node, "link", "set", "lo", "up")
        # The node's "eth0" (a veth whose peer stays in the node: no dummy module here) holds the
        # node IP; the service range routes there so the node's own connections to a ClusterIP
        # have a route before DNAT rewrites them.
        sh("ip", "-n", box.node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
        sh("ip", "-n", box.node, "link", "set", "eth0-peer", "up")
        sh("ip", "-n", box.node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        sh("ip", "-n", box.node, "link", "set", "eth0", "up")
        sh("ip", "-n", box.node, "route", "add", "10.96.0.0/12", "dev", "eth0")
        sh("ip", "netns", "exec", box.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, (pod, ip) in enumerate(zip(box.pods, POD_IPS, strict=True)):
            gateway = ip.rsplit(".", 1)[0] + ".1"
            sh("ip", "netns", "add", pod)
            sh("ip", "-n", box.node, "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0",
               "netns", pod)
            sh("ip", "-n", box.node, "addr", "add", f"{gateway}/24", "dev", f"veth{i}")
            sh("ip", "-n", box.node, "link", "set", f"veth{i}", "up")
            sh("ip", "-n", pod, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", pod, "link", "set", "eth0", "up")
            sh("ip", "-n", pod, "link", "set", "lo", "up")
            sh("ip", "-n", pod, "route", "add", "default", "via", gateway)
            root = tmp_path / pod
            root.mkdir()
            (root / "index.html").write_text(pod)
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", pod, sys.executable, "-m", "http.server", str(POD_PORT),
                 "--bind", ip, "--directory", str(root)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", pod, sys.executable, "-c", UDP_SERVER, ip, pod],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield box
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=5)
        # Deleting a namespace deletes its veths and routes with it.
        for ns in (*box.pods, box.node):
            sh("ip", "netns", "del", ns, check=False)


def curl(netns: str, url: str) -> tuple[int, str]:
    done = sh("ip", "netns", "exec", netns, "curl", "-s", "--max-time", "2", url, check=False)
    return done.returncode, done.stdout


async def wait_answering(netns: str, url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, _ = await asyncio.to_thread(curl, netns, url)
        if code == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer from {netns} in {timeout} s")


def service(namespace: str, name: str, cluster_ip: str, *, node_port: int = 0,
            affinity: bool = False, udp: bool = False) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.cluster_ip = cluster_ip
    svc.spec.type = "NodePort" if node_port else "ClusterIP"
    if affinity:
        svc.spec.session_affinity = "ClientIP"
    if udp:
        svc.spec.ports.add(port=53, target_port=str(UDP_PORT), protocol="UDP")
    else:
        svc.spec.ports.add(port=80, target_port=str(POD_PORT), protocol="TCP", node_port=node_port)
    return svc


def endpoints(namespace: str, name: str, ips: tuple[str, ...], *, udp: bool = False) -> core_pb2.Endpoints:
    ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
    ep.metadata.name, ep.metadata.namespace = name, namespace
    subset = ep.subsets.add()
    for ip in ips:
        subset.addresses.add(ip=ip)
    subset.ports.add(port=UDP_PORT, protocol="UDP") if udp else subset.ports.add(port=POD_PORT, protocol="TCP")
    return ep


def random_cluster_ip() -> str:
    return f"10.96.{random.randint(200, 250)}.{random.randint(1, 254)}"


async def test_cluster_ip_node_port_affinity_reject_and_cleanup(
        sandbox: Sandbox, client: Client, namespace: str) -> None:
    web_ip, sticky_ip, empty_ip = random_cluster_ip(), random_cluster_ip(), random_cluster_ip()
    node_port = random.randint(30000, 32767)
    await client.create(service(namespace, "web", web_ip, node_port=node_port))
    await create_slices(client, endpoints(namespace, "web", POD_IPS))
    await client.create(service(namespace, "sticky", sticky_ip, affinity=True))
    await create_slices(client, endpoints(namespace, "sticky", POD_IPS))
    await client.create(service(namespace, "empty", empty_ip))
    dns_ip = random_cluster_ip()
    await client.create(service(namespace, "dns", dns_ip, udp=True))
    await create_slices(client, endpoints(namespace, "dns", POD_IPS, udp=True))

    proxier = Proxier(client, node_name="node-1", netns=sandbox.node)
    async with running(proxier):
        url = f"http://{web_ip}/"
        await wait_answering(sandbox.node, url)
        answers = [await asyncio.to_thread(curl, sandbox.node, url) for _ in range(30)]
        assert all(code == 0 for code, _ in answers)
        assert {body for _, body in answers} == set(sandbox.pods), "both endpoints serve the ClusterIP"

        node_answers = [await asyncio.to_thread(curl, sandbox.node, f"http://{NODE_IP}:{node_port}/")
                        for _ in range(20)]
        assert {body for _, body in node_answers} == set(sandbox.pods), "the NodePort reaches both"

        await wait_answering(sandbox.node, f"http://{sticky_ip}/")
        sticky = {(await asyncio.to_thread(curl, sandbox.node, f"http://{sticky_ip}/"))[1] for _ in range(15)}
        assert len(sticky) == 1, "ClientIP affinity keeps one client on one endpoint"

        udp = [sh("ip", "netns", "exec", sandbox.node, sys.executable, "-c", UDP_CLIENT, dns_ip, check=False)
               for _ in range(12)]
        assert {done.stdout.strip() for done in udp} == set(sandbox.pods), "UDP services reach both endpoints"

        started = time.monotonic()
        code, _ = await asyncio.to_thread(curl, sandbox.node, f"http://{empty_ip}/")
        assert code == 7, "no endpoints: connection refused"
        assert time.monotonic() - started < 1.0, "refused at once, not after a timeout"

        # An endpoint change reaches the kernel: with one endpoint left, every answer is from it.
        await replace_slices(client, endpoints(namespace, "web", POD_IPS[:1]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            bodies = {(await asyncio.to_thread(curl, sandbox.node, url))[1] for _ in range(8)}
            if bodies == {sandbox.pods[0]}:
                break
        assert bodies == {sandbox.pods[0]}

    cleanup = sh(sys.executable, "-m", "nodeagent.proxy.main", "--cleanup", "--netns", sandbox.node,
                 check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert sh("ip", "netns", "exec", sandbox.node, "nft", "list", "table", "ip", "flotilla-proxy",
              check=False).returncode != 0


# Sends a datagram every 50 ms from one socket (one source port, so one conntrack flow) and prints
# "<monotonic time> <answer>" per reply, for argv[2] seconds: a resolver that keeps its socket.
UDP_STEADY_CLIENT = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendto(b"?", (sys.argv[1], 53))
    try:
        print(time.monotonic(), s.recvfrom(512)[0].decode(), flush=True)
    except socket.timeout:
        pass
    time.sleep(0.05)
"""


async def test_udp_flows_leave_a_removed_endpoint(sandbox: Sandbox, client: Client, namespace: str) -> None:
    """A UDP client keeping its socket moves to another endpoint once its own is removed (conntrack flushed)."""
    if not shutil.which("conntrack"):
        pytest.skip("conntrack is not installed")
    dns_ip = random_cluster_ip()
    await client.create(service(namespace, "dns", dns_ip, udp=True))
    await create_slices(client, endpoints(namespace, "dns", POD_IPS, udp=True))
    proxier = Proxier(client, node_name="node-1", netns=sandbox.node)
    async with running(proxier):
        await wait_answering_udp(sandbox.node, dns_ip)
        steady = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", sandbox.node, sys.executable, "-c", UDP_STEADY_CLIENT, dns_ip, "4",
            stdout=subprocess.PIPE)
        assert steady.stdout is not None
        first = (await steady.stdout.readline()).decode().split()[1]
        # When the endpoint it reached goes (its server still runs: without a flush the flow stays on it),
        other = next(p for p, ip in zip(sandbox.pods, POD_IPS, strict=True) if p != first)
        kept = tuple(ip for p, ip in zip(sandbox.pods, POD_IPS, strict=True) if p == other)
        replacement = endpoints(namespace, "dns", kept, udp=True)
        removed_at = time.monotonic()
        await replace_slices(client, replacement)
        out, _ = await steady.communicate()
    answers = [(float(t), name) for t, name in (line.split() for line in out.decode().splitlines())]
    late = [name for t, name in answers if t > removed_at + 1.0]
    # then within a second its datagrams reach the endpoint that is left, and only that one.
    assert late and set(late) == {other}, answers


async def wait_answering_udp(netns: str, ip: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sh("ip", "netns", "exec", netns, sys.executable, "-c", UDP_CLIENT, ip, check=False).returncode == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"udp {ip} did not answer from {netns} in {timeout} s")


async def test_traffic_policies_local_reach_only_this_nodes_endpoint(
        sandbox: Sandbox, client: Client, namespace: str) -> None:
    """Pod a runs on this node (node-1), pod b on another: Local policies send traffic to a only."""
    node_port = random.randint(30000, 32767)
    external, internal = random_cluster_ip(), random_cluster_ip()
    for name, ip, port in (("ext-local", external, node_port), ("int-local", internal, 0)):
        svc = service(namespace, name, ip, node_port=port)
        if port:
            svc.spec.external_traffic_policy = "Local"
        else:
            svc.spec.internal_traffic_policy = "Local"
        await client.create(svc)
        eps = endpoints(namespace, name, ())
        for pod_ip, node in zip(POD_IPS, ("node-1", "node-2"), strict=True):
            eps.subsets[0].addresses.add(ip=pod_ip, node_name=node)
        await create_slices(client, eps)
    proxier = Proxier(client, node_name="node-1", netns=sandbox.node)
    async with running(proxier):
        for url in (f"http://{NODE_IP}:{node_port}/", f"http://{internal}/"):
            await wait_answering(sandbox.node, url)
            bodies = {(await asyncio.to_thread(curl, sandbox.node, url))[1] for _ in range(12)}
            assert bodies == {sandbox.pods[0]}, f"{url}: {bodies}"
        # The ClusterIP of the externally-Local Service still reaches both (its internal policy is Cluster).
        bodies = {(await asyncio.to_thread(curl, sandbox.node, f"http://{external}/"))[1] for _ in range(20)}
        assert bodies == set(sandbox.pods)


async def test_endpoints_on_different_ports(sandbox: Sandbox, client: Client, namespace: str,
                                            tmp_path: Path) -> None:
    """Pod b serves on another port too: a Service whose endpoints differ in port reaches both."""
    other_port = POD_PORT + 1
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", sandbox.pods[1], sys.executable, "-m", "http.server", str(other_port),
        "--bind", POD_IPS[1], "--directory", str(tmp_path / sandbox.pods[1]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        mixed_ip = random_cluster_ip()
        await client.create(service(namespace, "mixed", mixed_ip))
        eps = endpoints(namespace, "mixed", POD_IPS[:1])
        second = eps.subsets.add()
        second.addresses.add(ip=POD_IPS[1])
        second.ports.add(port=other_port, protocol="TCP")
        await create_slices(client, eps)
        proxier = Proxier(client, node_name="node-1", netns=sandbox.node)
        async with running(proxier):
            url = f"http://{mixed_ip}/"
            await wait_answering(sandbox.node, f"http://{POD_IPS[1]}:{other_port}/")
            await wait_answering(sandbox.node, url)
            bodies = {(await asyncio.to_thread(curl, sandbox.node, url))[1] for _ in range(20)}
            assert bodies == set(sandbox.pods)
            chain = sh("ip", "netns", "exec", sandbox.node, "nft", "list", "chain", "ip", "flotilla-proxy",
                       f"svc-{namespace}/mixed/tcp/80").stdout
            assert "map @endpoints-tcp-" in chain, "the map's value is address and port"
    finally:
        server.terminate()
        await server.wait()
