"""The scheduler against a real apiserver and etcd, with hollow nodes (no kubelets).

Each test runs its own scheduler as an asyncio task, under a scheduler name of
its own (pods name it in spec.schedulerName) and seeing only nodes labelled for
the test, so tests sharing the session's apiserver never schedule each other's
pods. Waits poll the API with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bench import hollow
from client import Client
from controlplane.scheduler import config as configuration
from controlplane.scheduler import registry
from controlplane.scheduler.framework import Code, CycleState, Handle, Status
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.plugins import default_binder
from controlplane.scheduler.scheduler import Scheduler
from proto import core_pb2
from proto.quantity import milli_value

POOL = "scheduler.flotilla.io/test-pool"
CONTROL_PLANE_TAINT = ("node-role.kubernetes.io/control-plane", "", "NoSchedule")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {result!r}")
        await asyncio.sleep(0.02)


class Cluster:
    """A test's slice of the cluster: its nodes, its namespace, its scheduler."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.scheduler_name = f"sched-{namespace}"
        self.node_names: list[str] = []
        self.scheduler: Scheduler | None = None
        self._task: asyncio.Task[None] | None = None

    def node(self, name: str, **kwargs: Any) -> core_pb2.Node:
        full = f"{self.namespace}-{name}"
        self.node_names.append(full)
        return hollow.node(full, labels={POOL: self.namespace, **kwargs.pop("labels", {})}, **kwargs)

    async def add_nodes(self, *nodes: core_pb2.Node) -> None:
        await hollow.register_all(self.client, nodes)

    def pod(self, name: str, **kwargs: Any) -> core_pb2.Pod:
        return hollow.pod(name, self.namespace, scheduler_name=self.scheduler_name, **kwargs)

    async def create_pods(self, pods: list[core_pb2.Pod], concurrency: int = 64) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(p: core_pb2.Pod) -> None:
            async with gate:
                await self.client.create(p)

        await asyncio.gather(*(one(p) for p in pods))

    async def start(self, strategy: str = "LeastAllocated") -> Scheduler:
        profile = configuration.Profile(scheduler_name=self.scheduler_name)
        profile.args["NodeResourcesFit"] = {"scoringStrategy": {"type": strategy}}
        cfg = configuration.SchedulerConfig(profiles=[profile])
        self.scheduler = Scheduler(self.client, cfg, node_selector=f"{POOL}={self.namespace}", seed=7)
        self._task = asyncio.create_task(self.scheduler.run())
        await asyncio.wait_for(self.scheduler.synced.wait(), 10)
        return self.scheduler

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in self.node_names:
            with contextlib.suppress(Exception):
                await self.client.delete(core_pb2.Node, name)

    async def pods(self) -> list[core_pb2.Pod]:
        return (await self.client.list(core_pb2.Pod, self.namespace)).items

    async def placement(self) -> dict[str, int]:
        """Pods per node (node name without the test prefix); unbound pods under ""."""
        counts: dict[str, int] = {}
        for p in await self.pods():
            where = p.spec.node_name.removeprefix(f"{self.namespace}-")
            counts[where] = counts.get(where, 0) + 1
        return counts

    async def assert_not_overcommitted(self) -> None:
        nodes = {n.metadata.name: n for n in (await self.client.list(
            core_pb2.Node, label_selector=f"{POOL}={self.namespace}")).items}
        used: dict[str, list[int]] = {}
        for p in await self.pods():
            if p.spec.node_name:
                cpu = sum(milli_value(c.resources.requests.get("cpu", "0")) for c in p.spec.containers)
                entry = used.setdefault(p.spec.node_name, [0, 0])
                entry[0] += cpu
                entry[1] += 1
        for name, (cpu, count) in used.items():
            alloc = nodes[name].status.allocatable
            assert cpu <= milli_value(alloc["cpu"]), f"{name} overcommitted: {cpu}m"
            assert count <= int(alloc["pods"]), f"{name} has {count} pods"

    async def events(self, pod_name: str) -> list[core_pb2.Event]:
        return [e for e in (await self.client.list(core_pb2.Event, self.namespace)).items
                if e.involved_object.name == pod_name]


@pytest.fixture
async def cluster(client: Client, namespace: str) -> AsyncIterator[Cluster]:
    c = Cluster(client, namespace)
    yield c
    await c.stop()


async def test_pending_pods_are_bound_with_a_scheduled_event(cluster: Cluster) -> None:
    await cluster.add_nodes(*(cluster.node(f"n{i}") for i in range(3)))
    await cluster.start()
    await cluster.create_pods([cluster.pod(f"web-{i}", cpu="100m", memory="64Mi") for i in range(6)])

    async def all_bound() -> bool:
        return all(p.spec.node_name for p in await cluster.pods())

    await eventually(all_bound, what="6 pods bound")
    pod = await cluster.client.get(core_pb2.Pod, "web-0", cluster.namespace)
    condition = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert condition.status == "True"

    async def scheduled_event() -> list[core_pb2.Event]:
        return [e for e in await cluster.events("web-0") if e.reason == "Scheduled"]

    [event] = await eventually(scheduled_event, what="Scheduled event")
    assert event.type == "Normal" and event.source.component == "default-scheduler"
    assert event.message == f"Successfully assigned {cluster.namespace}/web-0 to {pod.spec.node_name}"


async def test_a_pod_that_fits_nowhere_waits_with_the_reasons_then_binds_when_a_node_appears(
        cluster: Cluster) -> None:
    await cluster.add_nodes(cluster.node("cp", cpu="8", taints=[CONTROL_PLANE_TAINT]),
                            cluster.node("w1", cpu="1"), cluster.node("w2", cpu="1"))
    await cluster.start()
    await cluster.create_pods([cluster.pod("big", cpu="2")])
    message = ("0/3 nodes are available: 1 node(s) had untolerated taint "
               "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu.")

    async def unschedulable() -> core_pb2.PodCondition | None:
        pod = await cluster.client.get(core_pb2.Pod, "big", cluster.namespace)
        return next((c for c in pod.status.conditions if c.type == "PodScheduled" and c.status == "False"), None)

    condition = await eventually(unschedulable, what="PodScheduled=False")
    assert (condition.reason, condition.message) == ("Unschedulable", message)
    pod = await cluster.client.get(core_pb2.Pod, "big", cluster.namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name

    async def failed_event() -> list[core_pb2.Event]:
        return [e for e in await cluster.events("big") if e.reason == "FailedScheduling"]

    [event] = await eventually(failed_event, what="FailedScheduling event")
    assert (event.type, event.message, event.source.component) == ("Warning", message, "default-scheduler")
    assert event.involved_object.kind == "Pod" and event.involved_object.uid == pod.metadata.uid

    appeared = time.monotonic()  # counted from before the create: the node may be used before it returns
    await cluster.add_nodes(cluster.node("w3", cpu="4"))

    async def bound() -> str:
        return (await cluster.client.get(core_pb2.Pod, "big", cluster.namespace)).spec.node_name

    assert await eventually(bound, timeout=5, what="big bound") == f"{cluster.namespace}-w3"
    assert time.monotonic() - appeared < 1.0


async def test_most_allocated_fills_a_node_before_the_next(cluster: Cluster) -> None:
    await cluster.add_nodes(*(cluster.node(f"n{i}", cpu="4", memory="8Gi") for i in range(3)))
    await cluster.start("MostAllocated")
    # One at a time, so each decision sees the last one bound (the cache makes a burst work too).
    for i in range(8):
        await cluster.create_pods([cluster.pod(f"p{i}", cpu="1", memory="1Gi")])

    async def placed() -> dict[str, int] | None:
        counts = await cluster.placement()
        return None if "" in counts else counts

    assert sorted((await eventually(placed, what="8 pods bound")).values()) == [4, 4]


async def test_least_allocated_spreads(cluster: Cluster) -> None:
    await cluster.add_nodes(*(cluster.node(f"n{i}", cpu="4", memory="8Gi") for i in range(4)))
    await cluster.start()
    await cluster.create_pods([cluster.pod(f"p{i}", cpu="500m", memory="512Mi") for i in range(8)])

    async def placed() -> dict[str, int] | None:
        counts = await cluster.placement()
        return None if "" in counts else counts

    assert sorted((await eventually(placed, what="8 pods bound")).values()) == [2, 2, 2, 2]


async def test_cordoned_and_tainted_nodes_are_avoided_until_released(cluster: Cluster) -> None:
    await cluster.add_nodes(cluster.node("a", unschedulable=True),
                            cluster.node("b", taints=[("dedicated", "db", "NoSchedule")]))
    await cluster.start()
    await cluster.create_pods([cluster.pod("web", cpu="100m")])

    async def reason() -> str:
        pod = await cluster.client.get(core_pb2.Pod, "web", cluster.namespace)
        return next((c.message for c in pod.status.conditions if c.reason == "Unschedulable"), "")

    assert await eventually(reason) == ("0/2 nodes are available: 1 node(s) had untolerated taint "
                                        "{dedicated: db}, 1 node(s) were unschedulable.")
    node = await cluster.client.get(core_pb2.Node, f"{cluster.namespace}-a")
    node.spec.unschedulable = False  # uncordon: a node update that matters retries the pod
    await cluster.client.update(node)

    async def bound() -> str:
        return (await cluster.client.get(core_pb2.Pod, "web", cluster.namespace)).spec.node_name

    assert await eventually(bound, timeout=5) == f"{cluster.namespace}-a"


async def test_500_pods_at_once_never_overcommit_a_node(cluster: Cluster) -> None:
    # 20 nodes x 4 cpu hold 13 pods of 300m each: 260 of the 500 fit, 240 must wait.
    await cluster.add_nodes(*(cluster.node(f"n{i:02}", cpu="4", memory="16Gi") for i in range(20)))
    await cluster.start()
    await cluster.create_pods([cluster.pod(f"p{i:03}", cpu="300m", memory="128Mi") for i in range(500)])

    async def settled() -> dict[str, int] | None:
        counts = await cluster.placement()
        done = sum(counts.values()) == 500 and counts.get("") == 240
        return counts if done else None

    counts = await eventually(settled, timeout=30, what="260 bound, 240 pending")
    assert all(n == 13 for where, n in counts.items() if where), counts
    await cluster.assert_not_overcommitted()


class FlakyBinder:
    """DefaultBinder that refuses its first Binding, as an apiserver hiccup would."""

    name = "FlakyBinder"

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        self.inner = default_binder.DefaultBinder(args, handle)
        self.failures = 0

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status:
        if self.failures == 0:
            self.failures += 1
            return Status(Code.ERROR, ("the apiserver is busy",), self.name)
        return await self.inner.bind(state, pod, node_name)


async def test_a_failed_binding_is_forgotten_and_retried(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.REGISTRY, "FlakyBinder", FlakyBinder)
    await cluster.add_nodes(cluster.node("only", cpu="2"))
    profile = configuration.Profile(scheduler_name=cluster.scheduler_name)
    profile.plugins = [p if p != "DefaultBinder" else "FlakyBinder" for p in profile.plugins]
    scheduler = Scheduler(cluster.client, configuration.SchedulerConfig(profiles=[profile]),
                          node_selector=f"{POOL}={cluster.namespace}")
    cluster.scheduler = scheduler
    cluster._task = asyncio.create_task(scheduler.run())
    await cluster.create_pods([cluster.pod("web", cpu="1500m")])

    async def bound() -> str:
        return (await cluster.client.get(core_pb2.Pod, "web", cluster.namespace)).spec.node_name

    assert await eventually(bound, what="web bound after one refused Binding") == f"{cluster.namespace}-only"
    assert scheduler.metrics.bind_failures == 1
    # Counted once: the first assumption was forgotten when its Binding failed.
    await eventually(lambda: asyncio.sleep(0, not scheduler.cache.is_assumed(f"{cluster.namespace}/web")))
    assert scheduler.cache.nodes.requested[scheduler.cache.nodes.index[f"{cluster.namespace}-only"]][0] == 1500
