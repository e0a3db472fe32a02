"""The work queue's promises, which every controller relies on: one sync per burst of
changes, never two workers on one key, back-off for failures, a clean shutdown — and
the `Controller` loop drained from it (client/controller.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from client import Client, ShutDown, WorkQueue, enqueue, run_workers
from client.controller import Controller
from proto import core_pb2


async def drain(queue: WorkQueue[str]) -> list[str]:
    """Every key queued right now, in order, each released at once."""
    keys = []
    while queue.len():
        key = await queue.get()
        queue.done(key)
        keys.append(key)
    return keys


async def test_duplicates_collapse_and_order_is_fifo() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    for key in ["ns/a", "ns/b", "ns/a", "ns/c", "ns/b"]:
        queue.add(key)
    assert queue.len() == 3
    assert await drain(queue) == ["ns/a", "ns/b", "ns/c"]


async def test_a_key_added_while_processing_waits_for_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("ns/a")
    key = await queue.get()
    queue.add("ns/a")
    queue.add("ns/a")
    # Held by a worker: a second worker must not get it, however often it is added.
    assert queue.len() == 0
    queue.done(key)
    assert queue.len() == 1
    assert await drain(queue) == ["ns/a"]


async def test_workers_never_sync_one_key_concurrently() -> None:
    queue: WorkQueue[str] = WorkQueue()
    active: set[str] = set()
    overlaps: list[str] = []
    synced: list[str] = []
    peak = 0

    async def sync(key: str) -> None:
        nonlocal peak
        if key in active:
            overlaps.append(key)
        active.add(key)
        peak = max(peak, len(active))
        if synced.count(key) < 2:
            # The object changes while its sync runs: the queue must hold this add back.
            queue.add(key)
        await asyncio.sleep(0.005)
        active.discard(key)
        synced.append(key)
        if len(synced) == 9:
            queue.shutdown()

    for key in ["a", "b", "c"]:
        queue.add(key)
    await asyncio.wait_for(run_workers(queue, sync, workers=4), 2)
    assert overlaps == []
    assert peak > 1  # different keys did run in parallel
    assert sorted(synced) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


async def test_rate_limited_back_off_doubles_to_the_cap_and_forget_resets_it() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.04)
    loop = asyncio.get_running_loop()
    for expected in [0.01, 0.02, 0.04, 0.04]:
        start = loop.time()
        queue.add_rate_limited("ns/a")
        assert queue.len() == 0  # not before its back-off
        key = await queue.get()
        queue.done(key)
        assert loop.time() - start >= expected * 0.9
    assert queue.num_requeues("ns/a") == 4

    queue.forget("ns/a")
    assert queue.num_requeues("ns/a") == 0
    start = loop.time()
    queue.add_rate_limited("ns/a")
    await queue.get()
    assert loop.time() - start < 0.035  # back to the 10 ms base, not the 40 ms cap


async def test_huge_failure_counts_stay_at_the_cap() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.005, max_delay=0.01)
    for _ in range(2000):
        queue.add_rate_limited("ns/a")  # must not overflow computing 0.005 * 2**1999
    assert queue.num_requeues("ns/a") == 2000
    await asyncio.wait_for(queue.get(), 1)


async def test_add_after_keeps_the_earliest_time_and_delivers_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("ns/a", 10)
    queue.add_after("ns/a", 0.01)
    queue.add_after("ns/a", 5)
    assert await asyncio.wait_for(queue.get(), 1) == "ns/a"
    queue.done("ns/a")
    await asyncio.sleep(0.02)
    assert queue.len() == 0


async def test_shutdown_hands_out_queued_keys_then_raises() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("ns/a")
    queue.add("ns/b")
    queue.shutdown()
    queue.add("ns/c")  # dropped: the queue is closing
    assert await drain(queue) == ["ns/a", "ns/b"]
    with pytest.raises(ShutDown):
        await queue.get()


async def test_shutdown_wakes_idle_workers_and_run_workers_returns() -> None:
    queue: WorkQueue[str] = WorkQueue()
    seen: list[str] = []

    async def sync(key: str) -> None:
        seen.append(key)

    workers = asyncio.create_task(run_workers(queue, sync, workers=3))
    queue.add("ns/a")
    await asyncio.sleep(0.01)
    queue.shutdown()
    await asyncio.wait_for(workers, 1)
    assert seen == ["ns/a"]


async def test_failed_sync_is_retried_with_back_off_and_forgotten_on_success() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.001)
    attempts: list[int] = []

    async def sync(key: str) -> None:
        attempts.append(queue.num_requeues(key))
        if len(attempts) < 3:
            raise RuntimeError("apiserver said no")
        queue.shutdown()

    queue.add("ns/a")
    await asyncio.wait_for(run_workers(queue, sync, workers=1), 1)
    assert attempts == [0, 1, 2]
    assert queue.num_requeues("ns/a") == 0


async def test_a_cancelled_getter_does_not_swallow_a_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("ns/a")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "ns/a"


class ConfigMapWatcher(Controller):
    """The smallest controller: remembers what it synced, and what the cache held then."""

    name = "config-map-watcher"

    def __init__(self, client: Client, namespace: str, *, resync_period: float = 0.0) -> None:
        super().__init__(client, workers=1, resync_period=resync_period)
        self.config_maps = self.factory.informer(core_pb2.ConfigMap, namespace)
        self.informers = [self.config_maps]
        enqueue(self.config_maps, self.queue)
        self.synced: list[tuple[str, int]] = []  # (key, objects cached when it was synced)

    async def sync(self, key: str) -> None:
        self.synced.append((key, len(self.config_maps.store)))


async def test_controller_syncs_from_warm_caches_resyncs_and_stops_its_own_factory(
        client: Client, namespace: str) -> None:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = "settings", namespace
    await client.create(cm)
    controller = ConfigMapWatcher(client, namespace, resync_period=0.1)
    controller.queue.add("first-pass")  # a key of the controller's own, queued before anything runs
    task = asyncio.create_task(controller.run())
    try:
        key = f"{namespace}/settings"
        for _ in range(100):
            if controller.synced.count((key, 1)) >= 3:
                break
            await asyncio.sleep(0.05)
        # The own key waited for the cache; the object was synced at start, then again by each resync.
        assert controller.synced[0] == ("first-pass", 1)
        assert controller.synced.count((key, 1)) >= 3, controller.synced
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert controller.queue.shutting_down
    cm.metadata.name = "later"
    await client.create(cm)
    await asyncio.sleep(0.3)
    assert len(controller.config_maps.store) == 1, "its own factory stopped watching with it"
