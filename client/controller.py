"""The one shape every controller has: informers → work queue → workers → `sync(key)`.

This is kubernetes/sample-controller's `Controller` with the plumbing written
once. A controller subclass registers its informers' handlers in `__init__`
(handlers only enqueue keys), lists in `informers` what must have synced before
its workers start, and implements `sync(key)`. `run()` waits for the caches,
then drains the queue with `workers` concurrent loops (`run_workers`: forget on
success, re-queue with per-key back-off on error) until cancelled.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from typing import Any, TypeVar

from google.protobuf.message import Message

from client import Client, Informer, InformerFactory, WorkQueue, key_of, run_workers

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class Controller(abc.ABC):
    """A named control loop over a work queue of string keys."""

    name = "controller"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2) -> None:
        self.client = client
        self.factory = factory
        self.workers = workers
        self.queue: WorkQueue[str] = WorkQueue(self.name)
        # What must be in the cache before sync may trust it (filled by subclasses).
        self.informers: list[Informer[Any]] = []

    @abc.abstractmethod
    async def sync(self, key: str) -> None:
        """Converge the object named by `key` (read from the cache) towards its spec."""

    async def run(self) -> None:
        """Wait for the caches, then run the workers until cancelled."""
        await asyncio.gather(*(informer.wait_synced() for informer in self.informers))
        log.info("%s: caches synced, starting %d workers", self.name, self.workers)
        try:
            await run_workers(self.queue, self.sync, self.workers)
        finally:
            self.queue.shutdown()


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
