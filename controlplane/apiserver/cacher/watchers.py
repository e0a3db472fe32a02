"""One client watch served from the watch cache: its filter, its queue, its bookmarks.

kube-apiserver's cacheWatcher (cacher/cache_watcher.go). The cache hands every
change of the resource to `offer`, which decides what this watcher sees —
ADDED, MODIFIED or DELETED as the change enters, stays in or leaves its
selectors, exactly as a watch straight on etcd would (registry._to_event) — and
queues the encoded bytes the cache already holds: a thousand watchers of one
object share one decoding and one encoding.

A watcher that falls `max_pending` events behind is ended rather than allowed to
hold the apiserver's memory: its client watches again from the last
resourceVersion it saw, and resumes from the buffer if that is still inside it
(Kubernetes ends a blocked watcher the same way).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from controlplane.apiserver.cacher.store import CachedObject, CacheEvent
from proto.selectors import FieldSelector, LabelSelector


@dataclass(frozen=True)
class Event:
    """A watch event as the API sends it: type, the object encoded, its resourceVersion."""

    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: bytes
    revision: int


class CacheWatcher:
    """A client's watch of one resource, fed by the cache."""

    def __init__(self, *, namespace: str, labels: LabelSelector, fields: FieldSelector, start_revision: int,
                 max_pending: int) -> None:
        self.namespace = namespace
        self.labels, self.fields = labels, fields
        self._everything = labels.empty() and fields.empty()
        self.last_revision = start_revision  # events at or before it are the client's already
        self._pending: deque[Event] = deque()
        self._max_pending = max_pending
        # Woken through a bare future, not an asyncio.Event under wait_for: with a thousand watchers of one
        # resource, the task wait_for makes per wait was a seventh of the apiserver's time (py-spy).
        self._waiter: asyncio.Future[object] | None = None
        self.stopped = False

    def _selects(self, cached: CachedObject | None) -> bool:
        if cached is None:
            return False
        if self.namespace and cached.namespace != self.namespace:
            return False
        return self._everything or cached.matches(self.labels, self.fields)

    def offer(self, event: CacheEvent) -> None:
        """Queue what this watcher sees of one change (maybe nothing)."""
        if self.stopped or event.revision <= self.last_revision:
            return
        new_ok = self._selects(event.current)
        old_ok = self._selects(event.previous)
        if new_ok:
            assert event.current is not None
            self._queue(Event("MODIFIED" if old_ok else "ADDED", event.current.raw, event.revision))
        elif old_ok:
            # Deleted, or no longer selected: the watcher sees the last state it would know.
            raw = event.current.raw if event.current is not None else event.deleted_raw
            self._queue(Event("DELETED", raw, event.revision))

    def add(self, event: Event) -> None:
        """Queue an event as it is (the initial ADDED events of a watch without a resourceVersion)."""
        self._queue(event)

    def _queue(self, event: Event) -> None:
        if len(self._pending) >= self._max_pending:
            self.stop()
            return
        self._pending.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        """End this watch: the client watches again (from its last resourceVersion)."""
        self.stopped = True
        self._wake()

    async def events(self, bookmark_interval: float, bookmark: Callable[[], asyncio.Future[int]]
                     ) -> AsyncIterator[Event]:
        """The queued events as they come; with a bookmark interval, a BOOKMARK after each quiet one, carrying
        the revision the cache is known complete up to (`bookmark` asks the cache for it)."""
        last_sent = self.last_revision
        loop = asyncio.get_running_loop()
        while True:
            while self._pending:
                event = self._pending.popleft()
                last_sent = event.revision
                yield event
            if self.stopped:
                return
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(bookmark_interval, _quiet, waiter) if bookmark_interval > 0 else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiter = None
            if waiter.result() is _QUIET and not self._pending and not self.stopped:
                revision = await bookmark()
                if revision > last_sent and not self._pending:
                    last_sent = self.last_revision = revision
                    yield Event("BOOKMARK", b"", revision)


_QUIET = object()


def _quiet(waiter: asyncio.Future[object]) -> None:
    """The bookmark interval passed with nothing to send."""
    if not waiter.done():
        waiter.set_result(_QUIET)
