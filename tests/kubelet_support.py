"""Fixtures and helpers for the kubelet tests: one real node (containerd + runc + CNI + kubelet).

The node runs for the whole session with its own containerd root, state, socket,
runc root, CNI directories and cgroup prefix under a temporary directory, and
short back-off, relist and probe timings so the crash-loop and probe stories
take seconds. Teardown removes everything the node made on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from client import Client
from nodeagent.kubelet.volumes import mounts
from proto import coordination_pb2, core_pb2
from proto.errors import NotFound
from provision.localnode import LocalNode, free_pod_cidr
from provision.processes import ApiServer

BUSYBOX = "localhost/busybox:latest"
SETTINGS = {
    "backoff_initial": 1.0, "backoff_max": 4.0, "backoff_reset": 60.0,
    "relist_period": 0.3, "sync_frequency": 2.0, "metrics_period": 1.0,
    "node_status_check_interval": 1.0, "lease_renew_interval": 2.0,
    # Volumes that cannot be set up are retried within 2 s; the mount timeout and the emptyDir
    # sizeLimit check come within seconds, not Kubernetes' two minutes and ten seconds.
    "volume_backoff_max": 2.0, "volume_mount_timeout": 4.0, "eviction_monitoring_period": 1.0,
    # Pods here are bound directly; the taint keeps any scheduler running in the session away.
    "register_with_taints": ["flotilla.io/kubelet-test=true:NoSchedule"],
}

T = TypeVar("T")


def containerd_unusable() -> str:
    """Why containerd cannot run pods on this machine, or "" if it can."""
    for tool in ("containerd", "runc", "ctr", "busybox", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (provision/install.sh installs it)"
    if not Path("/usr/lib/cni/bridge").exists():
        return "the CNI plugins are not installed (containernetworking-plugins)"
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        return "containerd needs root"
    return ""


@pytest.fixture(scope="module")
async def node(apiserver: ApiServer, request: pytest.FixtureRequest) -> AsyncIterator[LocalNode]:
    """One node per test module; its Node and Lease are removed afterwards so later tests never see it.

    A module may set `KUBELET_SETTINGS` (a dict) to change its node's kubelet config beyond SETTINGS, and
    `NODE_DISK_SIZE` (bytes) to give the node a disk of its own that size: a tmpfs holding its containerd
    (images, writable layers) and kubelet root (logs, emptyDirs), which a test can fill cheaply.
    """
    reason = containerd_unusable()
    if reason:
        pytest.skip(f"no container runtime: {reason}")
    name = f"kt-{uuid.uuid4().hex[:6]}"
    # A short base path: containerd's socket path must fit in a sockaddr_un (108 bytes).
    base = Path(tempfile.mkdtemp(prefix="flt-"))
    disk_size = getattr(request.module, "NODE_DISK_SIZE", None)
    if disk_size:
        mounts.mount_tmpfs(base, size=disk_size, mode=0o755)
    settings = {**SETTINGS, **getattr(request.module, "KUBELET_SETTINGS", {})}
    local = LocalNode(name, base, apiserver.address, "127.0.0.1", free_pod_cidr(), settings)
    try:
        await asyncio.to_thread(local.start)
        yield local
    finally:
        async with Client(apiserver.address) as client:
            # The node's pods go from the API first, so no later test (or controller) meets them.
            bound = await client.list(core_pb2.Pod, field_selector=f"spec.nodeName={name}")
            for pod in bound.items:
                with contextlib.suppress(NotFound):
                    await client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace,
                                        grace_period_seconds=0)
            await asyncio.to_thread(local.cleanup)
            # The kubelet may stop before it tore down the last pods: their tmpfs and subPath binds
            # go first, so removing the tree never reaches through a bind into a hostPath (the node's
            # own disk, if it has one, last).
            await asyncio.to_thread(mounts.unmount_all_under, base)
            shutil.rmtree(base, ignore_errors=True)
            for cls, ns in ((core_pb2.Node, ""), (coordination_pb2.Lease, "kube-node-lease")):
                with contextlib.suppress(NotFound):
                    await client.delete(cls, name, ns)


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, interval: float = 0.2,
                     what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def allow_privileged_pods(client: Client, namespace: str) -> None:
    """Label a test's namespace `privileged` for Pod Security, as an admin does for system workloads.

    The cluster enforces `baseline` by default, which refuses hostNetwork, hostPort and hostPath pods.
    """
    ns = await client.get(core_pb2.Namespace, namespace)
    ns.metadata.labels["pod-security.kubernetes.io/enforce"] = "privileged"
    await client.update(ns)


def make_pod(name: str, node: LocalNode, *containers: core_pb2.Container, restart_policy: str = "Always",
             grace: int | None = None) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.spec.node_name = node.name  # bound directly: these tests are about the kubelet, not the scheduler
    pod.spec.restart_policy = restart_policy
    if grace is not None:
        pod.spec.termination_grace_period_seconds = grace
    pod.spec.containers.extend(containers)
    return pod


def busybox(name: str, *command: str, **fields: Any) -> core_pb2.Container:
    container = core_pb2.Container(name=name, image=BUSYBOX, image_pull_policy="IfNotPresent", **fields)
    container.command.extend(command)
    return container


async def get_pod(client: Client, name: str, namespace: str) -> core_pb2.Pod | None:
    try:
        return await client.get(core_pb2.Pod, name, namespace)
    except NotFound:
        return None


async def wait_pod(client: Client, name: str, namespace: str, predicate: Callable[[core_pb2.Pod], bool],
                   timeout: float = 30.0, what: str = "") -> core_pb2.Pod:
    async def check() -> core_pb2.Pod | None:
        pod = await get_pod(client, name, namespace)
        return pod if pod is not None and predicate(pod) else None
    return await eventually(check, timeout, what=what or f"pod {name}")


def is_ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def pod_events(client: Client, name: str, namespace: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of every Event about the pod, as `kctl describe pod` lists them."""
    events = (await client.list(core_pb2.Event, namespace)).items
    return [(e.type, e.reason, e.message) for e in events
            if e.involved_object.kind == "Pod" and e.involved_object.name == name]
