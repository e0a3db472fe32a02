"""hostPort: given a node, when a pod asks for a hostPort, then the node's address answers on it.

Real containerd, CNI bridge and the portmap plugin (which the kubelet's
conflist enables with the portMappings capability): the kubelet passes the
container's ports as the sandbox's PortMappings, containerd hands them to
portmap, and portmap DNATs <node IP>:hostPort to the pod. The test node's IP
is 127.0.0.1, so the request goes to loopback. Deleting the pod removes the rule.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator

import pytest

from client import Client
from proto import core_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import (
    allow_privileged_pods,
    busybox,
    eventually,
    get_pod,
    is_ready,
    make_pod,
    node,
    wait_pod,
)

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here


# What portmap hooks into the host's nat table once, for every node on it; left behind by CNI DEL.
PORTMAP_HOOKS = [
    ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    ["POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"],
]
PORTMAP_CHAINS = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"]


def iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "-t", "nat", *args], capture_output=True, text=True)


@pytest.fixture(scope="module", autouse=True)
def host_nat_left_clean() -> Iterator[None]:
    """The test node shares the host's network namespace (a cluster node has its own, which goes
    with it): take portmap's shared chains away again once no hostPort is mapped on this host."""
    yield
    if iptables("-S", "CNI-HOSTPORT-DNAT").stdout.strip() != "-N CNI-HOSTPORT-DNAT":
        return  # absent, or some other pod on this host still has a hostPort
    for hook in PORTMAP_HOOKS:
        iptables("-D", *hook)
    for chain in PORTMAP_CHAINS:
        iptables("-F", chain)
        iptables("-X", chain)


def free_port() -> int:
    """A TCP port nothing on this machine listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nat_rules_for(port: int) -> list[str]:
    """The iptables nat rules (portmap's CNI-DN-* chains) that mention `port`."""
    rules = iptables("-S").stdout
    return [line for line in rules.splitlines() if f"--dport {port} " in line or line.endswith(f"--dport {port}")]


async def fetch(url: str) -> subprocess.CompletedProcess[str]:
    # busybox wget -T crashes here: bound it with timeout instead.
    return await asyncio.to_thread(subprocess.run, ["busybox", "timeout", "3", "wget", "-qO-", url],
                                   capture_output=True, text=True)


async def test_host_port_answers_on_the_node_ip_and_goes_with_the_pod(client: Client, namespace: str,
                                                                      node: LocalNode) -> None:
    host_port = free_port()
    web = busybox("web", "httpd", "-f", "-p", "8080", "-h", "/var/www")
    web.ports.add(container_port=8080, host_port=host_port, protocol="TCP")
    web.readiness_probe.tcp_socket.port = "8080"
    web.readiness_probe.period_seconds = 1
    await allow_privileged_pods(client, namespace)
    await client.create(make_pod("hostport", node, web, grace=1), namespace=namespace)
    pod = await wait_pod(client, "hostport", namespace, is_ready, what="hostport Ready")
    assert nat_rules_for(host_port), "portmap added no DNAT rule for the hostPort"

    answer = await fetch(f"http://{node.node_ip}:{host_port}/")
    assert answer.stdout == "hello from flotilla\n", answer.stderr
    # The pod's own address still serves its containerPort (the mapping is an addition).
    direct = await fetch(f"http://{pod.status.pod_ip}:8080/")
    assert direct.stdout == "hello from flotilla\n", direct.stderr

    await client.delete(core_pb2.Pod, "hostport", namespace, grace_period_seconds=1)

    async def gone() -> bool:
        return await get_pod(client, "hostport", namespace) is None
    await eventually(gone, 20, what="hostport deleted")
    assert nat_rules_for(host_port) == []
    after = await fetch(f"http://{node.node_ip}:{host_port}/")
    assert after.returncode != 0 and after.stdout == ""
