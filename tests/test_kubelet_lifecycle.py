"""The kubelet keeps pods healthy and cleans up after them.

Given a node: a failing liveness probe restarts the container; a failing
readiness probe takes the pod out of Ready and back; deleting a pod stops it
within its grace period and leaves nothing behind; restarting the kubelet keeps
running containers running; logs and exec work through the kubelet API; usage
reports appear.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import grpc

from client import Client
from nodeagent.kubelet.runtime import LABEL_POD_UID, Runtime
from proto import core_pb2, kubelet_pb2, kubelet_pb2_grpc, metrics_pb2
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



def exec_probe(*command: str, period: int = 1, failure_threshold: int = 1) -> core_pb2.Probe:
    probe = core_pb2.Probe(period_seconds=period, failure_threshold=failure_threshold, timeout_seconds=2)
    probe.exec.command.extend(command)
    return probe


def restarts(pod: core_pb2.Pod) -> int:
    return pod.status.container_statuses[0].restart_count if pod.status.container_statuses else 0


async def kubelet_stub(client: Client, local: LocalNode) -> kubelet_pb2_grpc.KubeletStub:
    found = await client.get(core_pb2.Node, local.name)
    port = found.status.daemon_endpoints.kubelet_endpoint.port
    return kubelet_pb2_grpc.KubeletStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))


async def test_failing_liveness_probe_restarts_the_container(client: Client, namespace: str,
                                                             node: LocalNode) -> None:
    # Healthy for about two seconds, then the file the probe checks goes away.
    c = busybox("app", "sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600",
                liveness_probe=exec_probe("cat", "/tmp/healthy", failure_threshold=2))
    await client.create(make_pod("live", node, c, grace=1), namespace=namespace)
    pod = await wait_pod(client, "live", namespace, lambda p: restarts(p) >= 1, timeout=30, what="a liveness restart")
    # Killed by the kubelet: SIGTERM (143) or, after the grace period, SIGKILL (137).
    assert pod.status.container_statuses[0].last_state.terminated.exit_code in (137, 143)

    async def reasons() -> set[str] | None:
        events = await client.list(core_pb2.Event, namespace)
        found = {e.reason for e in events.items if e.involved_object.name == "live"}
        return found if {"Created", "Started", "Unhealthy", "Killing"} <= found else None
    await eventually(reasons, 10, what="the kubelet's events about the pod")


async def test_failing_readiness_probe_flips_ready(client: Client, namespace: str, node: LocalNode) -> None:
    c = busybox("app", "sh", "-c", "touch /tmp/ready; sleep 3600",
                readiness_probe=exec_probe("test", "-f", "/tmp/ready"))
    await client.create(make_pod("ready", node, c, grace=1), namespace=namespace)
    await wait_pod(client, "ready", namespace, is_ready, what="Ready")
    stub = await kubelet_stub(client, node)
    await stub.Exec(kubelet_pb2.ExecRequest(namespace=namespace, pod="ready", command=["rm", "/tmp/ready"]))
    pod = await wait_pod(client, "ready", namespace, lambda p: not is_ready(p), what="not Ready")
    assert not pod.status.container_statuses[0].ready
    assert pod.status.container_statuses[0].state.HasField("running")  # readiness never restarts
    await stub.Exec(kubelet_pb2.ExecRequest(namespace=namespace, pod="ready", command=["touch", "/tmp/ready"]))
    await wait_pod(client, "ready", namespace, is_ready, what="Ready again")


async def test_logs_and_exec_through_the_kubelet_api(client: Client, namespace: str, node: LocalNode) -> None:
    c = busybox("talk", "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; sleep 3600")
    await client.create(make_pod("talk", node, c, grace=1), namespace=namespace)
    await wait_pod(client, "talk", namespace, lambda p: p.status.phase == "Running")
    stub = await kubelet_stub(client, node)

    async def logs(**fields: object) -> bytes:
        chunks = stub.Logs(kubelet_pb2.LogsRequest(namespace=namespace, pod="talk", **fields))  # type: ignore[arg-type]
        return b"".join([c.data async for c in chunks])
    full = await eventually(lambda: _nonempty(logs()), 10, what="logs")
    assert full == b"".join(b"line %d\n" % i for i in range(1, 6))
    assert await logs(tail_lines=2) == b"line 4\nline 5\n"
    reply = await stub.Exec(kubelet_pb2.ExecRequest(namespace=namespace, pod="talk",
                                                    command=["sh", "-c", "echo $HOSTNAME; exit 7"]))
    assert reply.stdout == b"talk\n" and reply.exit_code == 7


async def _nonempty(data: Awaitable[bytes]) -> bytes:
    return await data


async def test_delete_stops_within_grace_and_leaves_nothing(client: Client, namespace: str,
                                                            node: LocalNode) -> None:
    # The container ignores SIGTERM, so the kill comes only when the grace period (2 s) ends.
    c = busybox("app", "sh", "-c", "trap '' TERM; while true; do sleep 1; done")
    netns_dir = node.runtime.base / "state" / "io.containerd.grpc.v1.cri" / "netns"
    netns_before = set(netns_dir.iterdir()) if netns_dir.exists() else set()
    await client.create(make_pod("doomed", node, c, grace=2), namespace=namespace)
    pod = await wait_pod(client, "doomed", namespace, lambda p: p.status.phase == "Running")
    uid = pod.metadata.uid
    start = time.monotonic()
    await client.delete(core_pb2.Pod, "doomed", namespace)
    await eventually(lambda: _gone(client, "doomed", namespace), 20, what="pod object removed")
    elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 8, elapsed
    runtime = Runtime(str(node.runtime.socket))
    try:
        assert await runtime.list_pod_sandboxes({LABEL_POD_UID: uid}) == []
        assert await runtime.list_containers({LABEL_POD_UID: uid}) == []
    finally:
        await runtime.close()
    pattern = f"*/{node.runtime.cgroup_root.strip('/')}/pod{uid}"
    assert await asyncio.to_thread(lambda: list(Path("/sys/fs/cgroup").glob(pattern))) == []
    assert await asyncio.to_thread(lambda: set(netns_dir.iterdir())) <= netns_before  # its netns is gone


async def _gone(client: Client, name: str, namespace: str) -> bool:
    return await get_pod(client, name, namespace) is None


async def test_kubelet_restart_keeps_running_containers(client: Client, namespace: str, node: LocalNode) -> None:
    c = busybox("app", "sh", "-c", "sleep 3600", readiness_probe=exec_probe("true"))
    await client.create(make_pod("steady", node, c, grace=1), namespace=namespace)
    before = await wait_pod(client, "steady", namespace, is_ready, what="steady Ready")
    node.stop_kubelet()
    node.start_kubelet()
    # The new kubelet re-registers and renews: wait until it has synced the pod again.
    await eventually(lambda: _kubelet_answers(client, node), 30, what="the new kubelet serving")
    after = await wait_pod(client, "steady", namespace, is_ready)
    assert after.status.container_statuses[0].container_id == before.status.container_statuses[0].container_id
    assert after.status.container_statuses[0].restart_count == 0
    found = await client.get(core_pb2.Node, node.name)
    assert any(c.type == "Ready" and c.status == "True" for c in found.status.conditions)


async def _kubelet_answers(client: Client, local: LocalNode) -> bool:
    stub = await kubelet_stub(client, local)
    try:
        await stub.Exec(kubelet_pb2.ExecRequest(namespace="none", pod="none", command=["true"]), timeout=2)
    except grpc.aio.AioRpcError as err:
        return err.code() == grpc.StatusCode.NOT_FOUND
    return True


async def test_usage_is_published(client: Client, namespace: str, node: LocalNode) -> None:
    await client.create(make_pod("busy", node, busybox("app", "sh", "-c", "sleep 3600"), grace=1),
                        namespace=namespace)
    await wait_pod(client, "busy", namespace, lambda p: p.status.phase == "Running")

    async def report() -> metrics_pb2.PodMetrics | None:
        found = await client.list(metrics_pb2.PodMetrics, namespace)
        return next((m for m in found.items if m.metadata.name == "busy"), None)
    metrics = await eventually(report, 15, what="PodMetrics for busy")
    assert metrics.containers[0].name == "app" and "memory" in metrics.containers[0].usage
    node_metrics = await client.get(metrics_pb2.NodeMetrics, node.name)
    assert "cpu" in node_metrics.usage


async def test_startup_probe_holds_readiness_until_it_passes(client: Client, namespace: str,
                                                             node: LocalNode) -> None:
    c = busybox("slow", "sh", "-c", "sleep 2; touch /tmp/started; sleep 3600",
                startup_probe=exec_probe("test", "-f", "/tmp/started", failure_threshold=10),
                readiness_probe=exec_probe("true"))
    await client.create(make_pod("slow", node, c, grace=1), namespace=namespace)
    early = await wait_pod(client, "slow", namespace, lambda p: p.status.phase == "Running")
    assert not early.status.container_statuses[0].started and not is_ready(early)
    later = await wait_pod(client, "slow", namespace, is_ready, what="slow Ready after its startup probe")
    assert later.status.container_statuses[0].started and later.status.container_statuses[0].restart_count == 0


async def test_host_network_pod_has_the_node_ip(client: Client, namespace: str, node: LocalNode) -> None:
    pod = make_pod("hostnet", node, busybox("c", "sh", "-c", "sleep 3600"), grace=1)
    await allow_privileged_pods(client, namespace)
    pod.spec.host_network = True
    await client.create(pod, namespace=namespace)
    ran = await wait_pod(client, "hostnet", namespace, lambda p: p.status.phase == "Running")
    assert ran.status.pod_ip == node.node_ip
