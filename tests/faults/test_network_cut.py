"""Fault: a node's network is cut (its namespace's link set down) and healed.

Given two real nodes, each a network namespace on the bridge flt74
(192.168.74.0/24) with its own containerd and a kubelet inside it, which
reaches the apiserver only across that link (through a relay on the bridge
address, not the provider's loopback forwarder, which a cut link would not
cut), a controller manager with short node timings
(--node-monitor-grace-period 3s, --pod-eviction-timeout 1s) and the real
scheduler, and a Deployment of 4 busybox pods:

- when the link of the node holding most pods goes down, the node becomes
  Unknown and tainted unreachable, its pods are evicted, and 4 replacements
  run on the other node;
- when the link comes back, the node is Ready again, its kubelet finds its
  pods deleted and stops their containers, and in the end exactly 4 pods of
  the ReplicaSet run, counted both in the API and in the two containerds.

The short cut (the link comes back as soon as the replacements run, ~5 s)
is in the default run; the long one (held 40 s more, past the kubelet's gRPC
keepalive, so its connection to the apiserver must be replaced) is opt-in
(faults_slow). Needs root, containerd and runc.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from client import Client
from proto import apps_pb2, coordination_pb2, core_pb2, cri_pb2, cri_pb2_grpc
from proto.errors import NotFound
from provision import netns
from provision.images.oci import import_base_images
from provision.localnode import LocalNode
from provision.processes import Process
from tests.controllers_support import TEST_FLAGS, deployment, live_pods, ready
from tests.faults.support import FaultControlPlane, eventually, report, start_scheduler
from tests.kubelet_support import BUSYBOX, containerd_unusable

BRIDGE, SUBNET_PREFIX, MASTER = "flt74", 24, "192.168.74.1"
RELAY_PORT = 16474  # the apiserver, as the nodes see it across the bridge
CLUSTER_CIDR = "10.74.0.0/16"
NODES = [("faults-n1", "192.168.74.101", "10.74.1.0/24"), ("faults-n2", "192.168.74.102", "10.74.2.0/24")]
REPLICAS = 4
# Seconds from the heal to one running copy of each replica and the node Ready. After a long cut the
# kubelet's gRPC connection is dead (keepalive 30 s + 10 s) and reconnects with back-off: more time.
BOUNDS = {"short": 20.0, "long": 40.0}
KUBELET = {"backoff_initial": 1.0, "backoff_max": 4.0, "relist_period": 0.3, "sync_frequency": 2.0,
           "node_status_check_interval": 1.0, "lease_renew_interval": 1.0, "metrics_period": 5.0,
           # Only this test's pods (which tolerate it) land here, whatever other tests left pending.
           "register_with_taints": ["faults.flotilla.io/netns=true:NoSchedule"]}
OWN_TAINT = "faults.flotilla.io/netns"


@dataclass
class NetnsNode:
    local: LocalNode
    link: netns.NodeLink
    kubelet: Process | None = None

    @property
    def name(self) -> str:
        return self.local.name

    def start(self) -> None:
        self.local.runtime.start(netns=self.name)
        import_base_images(str(self.local.runtime.socket))
        self.kubelet = Process(f"kubelet-{self.name}", ["nsenter", f"--net=/run/netns/{self.name}",
                                                        *self.local.kubelet_argv()], self.local.base / "kubelet.log")
        self.kubelet.start()

    def cut(self, up: bool) -> None:
        subprocess.run(["ip", "-n", self.name, "link", "set", "eth0", "up" if up else "down"], check=True)

    async def running_pods(self, namespace: str) -> set[str]:
        """Names of the namespace's pods with a running container, asked of this node's containerd."""
        async with grpc.aio.insecure_channel(f"unix://{self.local.runtime.socket}") as channel:
            reply = await cri_pb2_grpc.RuntimeServiceStub(channel).ListContainers(
                cri_pb2.ListContainersRequest(), timeout=10)
        return {c.labels.get("io.kubernetes.pod.name", "") for c in reply.containers
                if c.state == cri_pb2.CONTAINER_RUNNING and c.labels.get("io.kubernetes.pod.namespace") == namespace}


async def relay(listen: str, port: int, target: str) -> asyncio.Server:
    """TCP from the bridge address to the apiserver on loopback (plaintext stays off every real network)."""
    host, _, target_port = target.rpartition(":")

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()

    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, int(target_port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))

    return await asyncio.start_server(connect, listen, port)


@pytest.fixture(scope="module")
async def cluster(fault_plane: FaultControlPlane) -> AsyncIterator[list[NetnsNode]]:
    reason = containerd_unusable()
    if reason:
        pytest.skip(f"no container runtime: {reason}")
    if netns.link_exists(BRIDGE):
        pytest.skip(f"{BRIDGE} exists already: another run of this test, or a crashed one "
                    f"(clean up: ip link del {BRIDGE}; ip netns del {NODES[0][0]}; ip netns del {NODES[1][0]})")
    base = Path(tempfile.mkdtemp(prefix="flt74-"))  # short: containerd's socket path must fit in 108 bytes
    nodes = [NetnsNode(LocalNode(name, base / name, f"{MASTER}:{RELAY_PORT}", address, cidr, dict(KUBELET)),
                       netns.NodeLink(name, f"{BRIDGE}-w{i + 1}", address, cidr))
             for i, (name, address, cidr) in enumerate(NODES)]
    procs: list[Process] = []
    server: asyncio.Server | None = None
    try:
        netns.create_bridge(BRIDGE, MASTER, SUBNET_PREFIX)
        for node in nodes:
            netns.create_node(BRIDGE, node.link, SUBNET_PREFIX)
        server = await relay(MASTER, RELAY_PORT, fault_plane.address)
        cm = Process("controller-manager", [sys.executable, "-m", "controlplane.controllers.main", "--server",
                                            fault_plane.address, "--cluster-cidr", CLUSTER_CIDR, *TEST_FLAGS],
                     base / "controller-manager.log")
        cm.start()
        procs.append(cm)
        procs.append(start_scheduler(fault_plane.address, None, base / "scheduler.log"))
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        yield nodes
    finally:
        for proc in procs:
            proc.stop()
        for node in nodes:
            if node.kubelet is not None:
                node.kubelet.stop()
            await asyncio.to_thread(node.local.runtime.cleanup)
        if server is not None:
            server.close()
        netns.remove_all(BRIDGE, [n.link for n in nodes], "flotilla-faults")
        async with Client(fault_plane.address) as client:
            for node in nodes:
                for cls, ns in ((core_pb2.Node, ""), (coordination_pb2.Lease, "kube-node-lease")):
                    with contextlib.suppress(NotFound):
                        await client.delete(cls, node.name, ns)
        shutil.rmtree(base, ignore_errors=True)


def lifecycle_taints(node: core_pb2.Node) -> list[str]:
    """The node lifecycle controller's taints (unreachable, not-ready), not the node's own."""
    return [t.key for t in node.spec.taints if t.key != OWN_TAINT]


def node_ready(node: core_pb2.Node) -> str:
    return next((c.status for c in node.status.conditions if c.type == "Ready"), "")


@pytest.mark.parametrize("hold", [0.0, pytest.param(40.0, marks=pytest.mark.faults_slow)], ids=["short", "long"])
async def test_network_cut_and_heal(client: Client, namespace: str, cluster: list[NetnsNode], hold: float) -> None:
    async def all_ready() -> bool:
        found = [await client.get(core_pb2.Node, n.name) for n in cluster]
        return all(node_ready(n) == "True" and not lifecycle_taints(n) for n in found)

    await eventually(all_ready, "both netns nodes Ready", timeout=60, interval=0.3)
    web = deployment("web", namespace, replicas=REPLICAS, image=BUSYBOX)
    container = web.spec.template.spec.containers[0]
    container.command.extend(["sh", "-c", "sleep 3600"])
    container.image_pull_policy = "IfNotPresent"
    web.spec.template.spec.termination_grace_period_seconds = 1
    web.spec.template.spec.tolerations.add(key=OWN_TAINT, operator="Exists", effect="NoSchedule")
    await client.create(web)

    async def running() -> list[core_pb2.Pod] | None:
        pods = await live_pods(client, namespace, "app=web")
        return pods if len(pods) == REPLICAS and all(ready(p) for p in pods) else None

    pods = await eventually(running, f"{REPLICAS} ready pods", timeout=60, interval=0.3)
    per_node = {n.name: sum(1 for p in pods if p.spec.node_name == n.name) for n in cluster}
    cut, other = sorted(cluster, key=lambda n: per_node[n.name], reverse=True)
    evicted = {p.metadata.name for p in pods if p.spec.node_name == cut.name}
    assert evicted, "no pod on either node?"

    cut.cut(up=False)
    started = time.monotonic()
    try:
        async def unknown() -> bool:
            node = await client.get(core_pb2.Node, cut.name)
            return node_ready(node) == "Unknown" and any(
                t.key == "node.kubernetes.io/unreachable" for t in node.spec.taints)

        await eventually(unknown, f"{cut.name} Unknown and tainted unreachable", timeout=30, interval=0.2)

        async def replaced() -> bool:
            pods = await live_pods(client, namespace, "app=web")
            return len(pods) == REPLICAS and all(ready(p) and p.spec.node_name == other.name for p in pods)

        await eventually(replaced, f"{REPLICAS} pods running on {other.name}", timeout=40, interval=0.3)
        replaced_after = time.monotonic() - started
        # Cut off, the node cannot know: its old containers still run (as in Kubernetes).
        stale = await cut.running_pods(namespace) & evicted
        await asyncio.sleep(hold)
    finally:
        cut.cut(up=True)
    healed = time.monotonic()

    async def converged() -> bool:
        node = await client.get(core_pb2.Node, cut.name)
        if node_ready(node) != "True" or lifecycle_taints(node):
            return False
        everything = (await client.list(core_pb2.Pod, namespace, label_selector="app=web")).items
        running_now = await cut.running_pods(namespace) | await other.running_pods(namespace)
        return len(everything) == REPLICAS and not (running_now & evicted)

    bound = BOUNDS["long" if hold else "short"]
    await eventually(converged, "the healed node Ready and its evicted pods stopped", timeout=bound + 10,
                     interval=0.3)
    after_heal = time.monotonic() - healed
    api_pods = await live_pods(client, namespace, "app=web")
    in_runtimes = [p for n in cluster for p in await n.running_pods(namespace)]
    rs_names = {p.metadata.owner_references[0].name for p in api_pods}
    lost = REPLICAS - sum(1 for p in api_pods if ready(p) and p.metadata.name in in_runtimes)
    duplicated = max(0, len(in_runtimes) - REPLICAS) + max(0, len(api_pods) - REPLICAS) + (len(rs_names) - 1)
    print(f"\n  network cut: {len(evicted)} pods on {cut.name}, replaced on {other.name} {replaced_after:.1f} s "
          f"after the cut, {len(stale)} still running there while cut off; cut for {healed - started:.1f} s")
    assert (await client.list(apps_pb2.ReplicaSet, namespace)).items[0].status.ready_replicas == REPLICAS
    report(f"network-cut-{'long' if hold else 'short'}", checked=REPLICAS + len(evicted), lost=lost,
           duplicated=duplicated, converged=after_heal, bound=bound)
