"""preStop hooks on a real node: run before SIGTERM, awaited, and reported when they fail.

Given a node (containerd + kubelet in the host's namespace, so an httpGet hook
with host 127.0.0.1 reaches a server this test runs), when a pod whose
containers have preStop hooks is deleted, then the HTTP hook arrives while the
containers still run, the exec hook's time is waited for, and a failing hook is
reported as an event while the pod is removed all the same.
"""

from __future__ import annotations

import asyncio
import time

from client import Client
from nodeagent.kubelet.runtime import LABEL_POD_UID, Runtime
from proto import core_pb2, cri_pb2
from provision.localnode import LocalNode
from tests.kubelet_support import busybox, eventually, get_pod, make_pod, node, wait_pod

__all__ = ["node"]  # the module-scoped fixture, imported so pytest finds it here

# Stops at once on SIGTERM: any time deletion takes beyond that is the hooks'.
QUICK_STOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"


def exec_hook(*command: str) -> core_pb2.Lifecycle:
    lifecycle = core_pb2.Lifecycle()
    lifecycle.pre_stop.exec.command.extend(command)
    return lifecycle


async def test_pre_stop_hooks_run_before_the_containers_stop(client: Client, namespace: str,
                                                             node: LocalNode) -> None:
    runtime = Runtime(str(node.runtime.socket))
    seen: list[tuple[float, list[int]]] = []  # when the HTTP hook came, and the containers' states then
    uid = ""

    async def hook(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        containers = await runtime.list_containers({LABEL_POD_UID: uid})
        seen.append((time.monotonic(), [c.state for c in containers]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hook, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = core_pb2.Lifecycle()
    http.pre_stop.http_get.host, http.pre_stop.http_get.port, http.pre_stop.http_get.path = \
        "127.0.0.1", str(port), "/drain"
    pod = make_pod("hooked", node,
                   busybox("web", "sh", "-c", QUICK_STOP, lifecycle=http),
                   busybox("sidecar", "sh", "-c", QUICK_STOP, lifecycle=exec_hook("sleep", "2")), grace=10)
    try:
        created = await client.create(pod, namespace=namespace)
        uid = created.metadata.uid
        await wait_pod(client, "hooked", namespace, lambda p: p.status.phase == "Running", what="Running")
        deleted = time.monotonic()
        await client.delete(core_pb2.Pod, "hooked", namespace)
        await eventually(lambda: _gone(client, "hooked", namespace), 30, what="the pod removed")
        took = time.monotonic() - deleted
    finally:
        server.close()
        await runtime.close()
    assert len(seen) == 1, "the HTTP hook ran once"
    assert seen[0][1] == [cri_pb2.CONTAINER_RUNNING] * 2, "both containers still ran when the hook came"
    assert 2.0 <= took < 8.0, f"the exec hook's 2 s were waited for, then SIGTERM stopped both at once ({took:.1f} s)"


async def test_a_failing_hook_is_reported_and_the_pod_still_goes(client: Client, namespace: str,
                                                                 node: LocalNode) -> None:
    pod = make_pod("badhook", node, busybox("app", "sh", "-c", QUICK_STOP, lifecycle=exec_hook("false")), grace=5)
    await client.create(pod, namespace=namespace)
    await wait_pod(client, "badhook", namespace, lambda p: p.status.phase == "Running", what="Running")
    await client.delete(core_pb2.Pod, "badhook", namespace)
    await eventually(lambda: _gone(client, "badhook", namespace), 30, what="the pod removed")

    async def reported() -> bool:
        events = await client.list(core_pb2.Event, namespace)
        return any(e.reason == "FailedPreStopHook" and e.involved_object.name == "badhook" for e in events.items)
    await eventually(reported, 10, what="a FailedPreStopHook event")


async def _gone(client: Client, name: str, namespace: str) -> bool:
    return await get_pod(client, name, namespace) is None
