"""Fault: a node's kubelet is SIGKILLed with pods running, and started again.

Given a real node (containerd, runc, CNI and a kubelet process) running 4
busybox pods, when the kubelet is killed, the containers keep running in
containerd (the kubelet is not their parent: the shims are), and a new
kubelet, started as a supervisor would, adopts them: the node posts Ready
again, every pod is Ready with the same container ID and no restart, and the
runtime holds exactly one ready sandbox and one running container per pod
(the new kubelet made nothing twice).
"""

from __future__ import annotations

import time

import grpc

from client import Client
from proto import core_pb2, cri_pb2, cri_pb2_grpc
from provision.localnode import LocalNode
from tests.faults.support import eventually, report
from tests.kubelet_support import busybox, is_ready, make_pod, node, wait_pod  # noqa: F401 - fixture

PODS = 4
BOUND = 20.0  # seconds from the kill until the new kubelet has adopted every pod


async def running_in_runtime(local: LocalNode) -> tuple[dict[str, str], int]:
    """Running container id -> pod name, and the number of ready sandboxes, asked of containerd itself."""
    async with grpc.aio.insecure_channel(f"unix://{local.runtime.socket}") as channel:
        stub = cri_pb2_grpc.RuntimeServiceStub(channel)
        containers = (await stub.ListContainers(cri_pb2.ListContainersRequest(), timeout=10)).containers
        sandboxes = (await stub.ListPodSandbox(cri_pb2.ListPodSandboxRequest(), timeout=10)).items
    running = {c.id: c.labels.get("io.kubernetes.pod.name", "") for c in containers
               if c.state == cri_pb2.CONTAINER_RUNNING}
    return running, sum(1 for s in sandboxes if s.state == cri_pb2.SANDBOX_READY)


def container_id(pod: core_pb2.Pod) -> str:
    return pod.status.container_statuses[0].container_id.removeprefix("containerd://") \
        if pod.status.container_statuses else ""


async def test_sigkill_kubelet_with_pods_running(client: Client, namespace: str,
                                                 node: LocalNode) -> None:  # noqa: F811 - the fixture
    names = [f"steady-{i}" for i in range(PODS)]
    for name in names:
        await client.create(make_pod(name, node, busybox("app", "sh", "-c", "sleep 3600"), grace=1),
                            namespace=namespace)
    before = {name: container_id(await wait_pod(client, name, namespace, is_ready, what=f"{name} Ready"))
              for name in names}
    assert node.kubelet is not None
    node.kubelet.kill()  # SIGKILL
    started, killed_at = time.monotonic(), time.time()
    orphaned, _ = await running_in_runtime(node)
    assert set(before.values()) <= set(orphaned), "containers died with their kubelet"
    node.start_kubelet()

    async def adopted() -> bool:
        found = await client.get(core_pb2.Node, node.name)
        ready = next((c for c in found.status.conditions if c.type == "Ready"), None)
        if ready is None or ready.status != "True" or ready.last_heartbeat_time.ToNanoseconds() / 1e9 < killed_at:
            return False  # no heartbeat from the new kubelet yet
        pods = [await client.get(core_pb2.Pod, name, namespace) for name in names]
        return all(is_ready(p) and container_id(p) for p in pods)

    await eventually(adopted, "the new kubelet to post Ready and report every pod", timeout=BOUND + 10)
    converged = time.monotonic() - started

    after = {name: await client.get(core_pb2.Pod, name, namespace) for name in names}
    running, sandboxes = await running_in_runtime(node)
    ours = {cid: pod for cid, pod in running.items() if pod in before}
    lost = sum(1 for name, pod in after.items() if container_id(pod) != before[name] or before[name] not in running)
    duplicated = max(0, len(ours) - PODS) + max(0, sandboxes - PODS) + sum(
        p.status.container_statuses[0].restart_count for p in after.values())
    report("kubelet-sigkill", checked=PODS, lost=lost, duplicated=duplicated, converged=converged, bound=BOUND)
