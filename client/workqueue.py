"""The rate-limited work queue every Flotilla control loop drains.

Informer handlers do not reconcile; they put the changed object's key
("namespace/name") here, and a few workers take keys off and call `sync(key)`.
This is client-go's `workqueue.RateLimitingInterface`, asyncio-shaped, and its
guarantees are what make controllers simple to write:

- A key waiting in the queue is there once: ten updates to one pod before a
  worker gets to it cost one sync (the *dirty* set collapses duplicates).
- A key is never handed to two workers at once: a key added while it is being
  processed waits, and is queued again when the worker calls `done(key)`. So
  `sync` for one object never races itself, while different objects run in
  parallel.
- Otherwise keys come out in the order they went in.
- A failing key is retried with per-key exponential back-off
  (`add_rate_limited`: 5 ms, 10 ms, 20 ms, ... up to 1000 s), and `forget` resets
  it once a sync succeeds, so one broken object cannot starve the others.
- After `shutdown()`, new adds are dropped, keys already queued are still
  handed out, and then `get()` raises `ShutDown` in every worker.

`run_workers` is sample-controller's `runWorker`/`processNextWorkItem` loop, so
controllers only write `sync`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from proto.errors import ApiError, Conflict

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 1000.0


class ShutDown(Exception):
    """Raised by `WorkQueue.get()` once the queue is shut down and drained: the worker should exit."""


class WorkQueue(Generic[K]):
    """A FIFO of keys with de-duplication, per-key exclusivity, delays and back-off.

    Must be used from one event loop; `add_after`/`add_rate_limited` need it running.
    """

    def __init__(
        self,
        name: str = "",
        *,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: deque[K] = deque()
        # Keys that need processing: queued ones, plus processing ones that changed meanwhile.
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        # One timer per waiting key, so a hot failing key does not pile up timers.
        self._waiting: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self._shutting_down = False

    # ---------------------------------------------------------------- adding

    def add(self, key: K) -> None:
        """Queue `key` unless it is already waiting; if a worker holds it, once that worker is done."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._wake_one()

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` seconds; an earlier pending time for the same key wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        ready_at = loop.time() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[1].cancel()
        self._waiting[key] = (ready_at, loop.call_at(ready_at, self._ready, key))

    def _ready(self, key: K) -> None:
        del self._waiting[key]
        self.add(key)

    def add_rate_limited(self, key: K) -> None:
        """Queue `key` after its back-off: base_delay * 2**failures, capped at max_delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # Past 2**62 the delay is the cap anyway; stop before float overflow.
        delay = self.max_delay if failures > 62 else min(self.base_delay * 2**failures, self.max_delay)
        self.add_after(key, delay)

    def forget(self, key: K) -> None:
        """Reset `key`'s back-off (its sync succeeded); does not remove it from the queue."""
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        """How many times `key` was rate-limited since it was last forgotten."""
        return self._failures.get(key, 0)

    # ---------------------------------------------------------------- taking

    async def get(self) -> K:
        """The next key, waiting for one; the caller must call `done(key)` after processing.

        Raises `ShutDown` once the queue is shut down and no keys are left.
        """
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(f"work queue {self.name!r} is shut down")
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # A wake-up meant for this cancelled getter must not be lost.
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._queue:
                    self._wake_one()
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: K) -> None:
        """Release `key`; if it was added while being processed, queue it again now."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # ---------------------------------------------------------------- lifecycle

    def shutdown(self) -> None:
        """Drop future adds and delayed keys; workers get the queued keys, then `ShutDown`."""
        self._shutting_down = True
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def len(self) -> int:
        """How many keys are queued (not counting those being processed or delayed)."""
        return len(self._queue)


async def run_workers(queue: WorkQueue[K], sync: Callable[[K], Awaitable[None]], workers: int) -> None:
    """Run `workers` concurrent loops of get → sync → forget/re-queue → done until shutdown.

    Returns when the queue is shut down and drained; cancelling it stops the workers.
    """
    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(_worker(queue, sync))


async def _worker(queue: WorkQueue[K], sync: Callable[[K], Awaitable[None]]) -> None:
    while True:
        try:
            key = await queue.get()
        except ShutDown:
            return
        try:
            await sync(key)
        except Exception as err:
            # A Conflict means the cache was a step behind a write: routine, retried at once
            # with back-off, and not worth an operator's attention. Other API errors (the
            # apiserver down) are worth a line; anything else is a bug in sync, so keep its
            # traceback.
            level = logging.DEBUG if isinstance(err, Conflict) else logging.ERROR
            log.log(level, "%s: error syncing %r, requeuing (attempt %d): %s", queue.name or "workqueue", key,
                    queue.num_requeues(key) + 1, err, exc_info=not isinstance(err, ApiError))
            queue.add_rate_limited(key)
        else:
            queue.forget(key)
        finally:
            queue.done(key)
