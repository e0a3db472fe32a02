"""Fault: the controller manager is SIGKILLed in the middle of a Deployment's scale-up, then started again.

Given a Deployment of 2 ready pods on hollow nodes, when it is scaled to 100
and the controller manager is killed once some of the new pods exist, and a
fresh copy starts (it must first wait out the dead leader's Lease), then in
the end exactly 100 pods live, all ready, all owned by the one ReplicaSet (one
pod-template-hash), and no surplus pod appears afterwards: the new copy's
ReplicaSet controller counted the pods the old one had made, including those
whose creation it never saw acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from bench.hollow_kubelet import HollowCluster
from client import Client
from proto import apps_pb2, core_pb2
from proto.errors import NotFound
from tests.controllers_support import (  # noqa: F401 - fixtures
    ControllerManager,
    controller_manager_fixture,
    deployment,
    hollow_fixture,
    live_pods,
    mutate,
    ready,
)
from tests.faults.support import eventually, report

REPLICAS = 100
BOUND = 30.0  # seconds from the kill to 100 ready pods (includes the 3 s leader Lease running out)


@pytest.fixture
async def removes_its_workload(client: Client, namespace: str) -> AsyncIterator[None]:
    """Leave no Deployment behind: its ReplicaSet would recreate its pods for later tests' schedulers."""
    yield
    with contextlib.suppress(NotFound):
        await client.delete(apps_pb2.Deployment, "web", namespace, propagation_policy="Orphan")
    for rs in (await client.list(apps_pb2.ReplicaSet, namespace)).items:
        await client.delete(apps_pb2.ReplicaSet, rs.metadata.name, namespace, propagation_policy="Orphan")
    for pod in (await client.list(core_pb2.Pod, namespace)).items:
        with contextlib.suppress(NotFound):
            await client.delete(core_pb2.Pod, pod.metadata.name, namespace, grace_period_seconds=0)


async def test_sigkill_controller_manager_mid_scale_up(client: Client, namespace: str, hollow: HollowCluster,
                                                       controller_manager: ControllerManager,
                                                       removes_its_workload: None) -> None:
    await client.create(deployment("web", namespace, replicas=2))
    await eventually(lambda: _ready_count(client, namespace, 2), "2 ready pods", timeout=20)

    def scale(d: apps_pb2.Deployment) -> None:
        d.spec.replicas = REPLICAS

    # Kill from inside a watch, on the first new pods: polling with lists can be too slow to catch the burst.
    seen: set[str] = set()
    killed = asyncio.Event()

    async def kill_mid_burst() -> None:
        async for event in client.watch(core_pb2.Pod, namespace, label_selector="app=web"):
            if event.type == "ADDED" and event.object is not None:
                seen.add(event.object.metadata.name)
                if len(seen) >= 2 + 5:
                    controller_manager.kill()  # SIGKILL, mid-burst of pod creates
                    killed.set()
                    return

    watcher = asyncio.create_task(kill_mid_burst())
    await asyncio.sleep(0.2)  # the watch is open (it lists the 2 existing pods first)
    await mutate(client, apps_pb2.Deployment, "web", namespace, scale)
    await asyncio.wait_for(killed.wait(), timeout=20)
    await watcher
    started = time.monotonic()
    at_kill = len(await live_pods(client, namespace, "app=web"))
    controller_manager.start()
    await eventually(lambda: _ready_count(client, namespace, REPLICAS), f"{REPLICAS} ready pods", timeout=BOUND + 10)
    converged = time.monotonic() - started
    await asyncio.sleep(1.5)  # a surplus (or a missing) pod would show by now

    pods = await live_pods(client, namespace, "app=web")
    rss = (await client.list(apps_pb2.ReplicaSet, namespace)).items
    live_rs = [rs for rs in rss if rs.spec.replicas > 0]
    hashes = {p.metadata.labels.get("pod-template-hash", "") for p in pods}
    owners = {ref.uid for p in pods for ref in p.metadata.owner_references if ref.controller}
    lost = max(0, REPLICAS - len(pods))
    duplicated = max(0, len(pods) - REPLICAS) + (len(live_rs) - 1) + (len(hashes) - 1) + (len(owners) - 1) + (
        len(pods) - len({p.metadata.uid for p in pods}))
    print(f"\n  controller manager kill: {at_kill} of {REPLICAS} pods existed at the kill")
    assert at_kill < REPLICAS, "the scale-up finished before the kill: nothing was tested"
    report("controller-manager-sigkill", checked=REPLICAS, lost=lost, duplicated=duplicated, converged=converged,
           bound=BOUND)


async def _ready_count(client: Client, namespace: str, want: int) -> bool:
    pods = await live_pods(client, namespace, "app=web")
    return len(pods) == want and all(ready(p) for p in pods)

