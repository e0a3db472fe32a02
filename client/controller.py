"""The one shape every controller has: informers → work queue → workers → `sync(key)`.

This is kubernetes/sample-controller's `Controller` with the plumbing written
once. A controller subclass registers its informers' handlers in `__init__`
(handlers only enqueue keys: `enqueue(informer, self.queue)`), lists in
`informers` what must have synced before its workers start, and implements
`sync(key)`. `run()` waits for the caches, then drains the queue with `workers`
concurrent loops (`run_workers`: forget on success, re-queue with per-key
back-off on error) until cancelled.

The same shape serves every loop in Flotilla, not only the controller
manager's: the proxy and the LoadBalancer announcer (which run their own
informers: no `factory` given, so `run()` starts and stops one of their own),
and the kubelet's node routes (which keep a kernel, not the API, in step). A
loop that must look at everything now and then, even when no event said so
(level-triggered repair of what someone changed behind its back), sets
`resync_period`: every period `resync()` queues every cached key again. Keys
need not name objects: a loop may queue a key of its own (the proxy's full
sync, the routes' sweep) and handle it in `sync` like any other, with the same
de-duplication, exclusivity and back-off.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from typing import Any, TypeVar

from google.protobuf.message import Message

from client import Client, Informer, InformerFactory, WorkQueue, key_of, run_workers
from client.workqueue import DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class Controller(abc.ABC):
    """A named control loop over a work queue of string keys."""

    name = "controller"

    def __init__(self, client: Client, factory: InformerFactory | None = None, *, workers: int = 2,
                 resync_period: float = 0.0, base_delay: float = DEFAULT_BASE_DELAY,
                 max_delay: float = DEFAULT_MAX_DELAY) -> None:
        self.client = client
        # A controller manager shares one factory among its controllers and runs it itself; a
        # daemon with a single loop (the proxy, a standalone controller) lets the loop own one.
        self.own_factory = factory is None
        self.factory = factory or InformerFactory(client)
        self.workers = workers
        self.resync_period = resync_period  # seconds between `resync()` passes; 0: only on events
        # base_delay/max_delay bound the per-key back-off: a loop whose failures are local (nft,
        # netlink) retries slower than the 5 ms a Conflict deserves, so it does not spin on them.
        self.queue: WorkQueue[str] = WorkQueue(self.name, base_delay=base_delay, max_delay=max_delay)
        # What must be in the cache before sync may trust it (filled by subclasses).
        self.informers: list[Informer[Any]] = []

    @abc.abstractmethod
    async def sync(self, key: str) -> None:
        """Converge the object named by `key` (read from the cache) towards its spec."""

    def resync(self) -> None:
        """Queue every key the informers hold (each `resync_period`): level-triggered repair.

        Override to queue keys of the controller's own as well (call this too).
        """
        for informer in self.informers:
            for key in informer.store.list_keys():
                self.queue.add(key)

    async def run(self) -> None:
        """Wait for the caches, then run the workers (and the resyncs) until cancelled."""
        if self.own_factory:
            self.factory.start()
        try:
            await asyncio.gather(*(informer.wait_synced() for informer in self.informers))
            log.info("%s: caches synced, starting %d workers", self.name, self.workers)
            async with asyncio.TaskGroup() as group:
                group.create_task(run_workers(self.queue, self.sync, self.workers))
                if self.resync_period > 0:
                    group.create_task(self._resync_every_period())
        finally:
            self.queue.shutdown()
            if self.own_factory:
                self.factory.stop()

    async def _resync_every_period(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            self.resync()


def copy(obj: M) -> M:
    """A private copy of a cached object: caches are shared and must never be mutated."""
    new = type(obj)()
    new.CopyFrom(obj)
    return new


def meta(obj: Message) -> Any:
    return getattr(obj, "metadata")  # noqa: B009 - every kind has metadata; Message does not say so


class MutationCache:
    """What this controller just wrote, until its informer shows it (client-go's MutationCache).

    A controller that creates a ReplicaSet and syncs again before the watch delivers
    it would otherwise think it is missing, and act twice. Objects written here are
    preferred over the cache's copy while newer (resourceVersions are etcd revisions,
    so they compare as numbers), and dropped once the cache catches up, the object is
    deleted, or `ttl` seconds pass.
    """

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._written: dict[str, tuple[Any, float]] = {}

    def remember(self, obj: Message) -> None:
        self._written[key_of(obj)] = (obj, time.monotonic())

    def forget(self, obj: Message) -> None:
        self._written.pop(key_of(obj), None)

    def merge(self, cached: list[M], namespace: str) -> list[M]:
        """`cached` (one namespace's objects) with our newer writes in place, and our creations added."""
        now = time.monotonic()
        out: list[M] = []
        seen: set[str] = set()
        for obj in cached:
            key = key_of(obj)
            seen.add(key)
            mine = self._written.get(key)
            if mine is not None and _version(mine[0]) > _version(obj) and meta(mine[0]).uid == meta(obj).uid:
                out.append(mine[0])
            else:
                self._written.pop(key, None)
                out.append(obj)
        for key, (obj, at) in list(self._written.items()):
            if now - at > self.ttl:
                del self._written[key]
            elif key not in seen and meta(obj).namespace == namespace:
                out.append(obj)
        return out


def _version(obj: Message) -> int:
    try:
        return int(meta(obj).resource_version)
    except ValueError:
        return 0
