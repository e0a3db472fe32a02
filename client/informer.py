"""Informers: each component's local, always-current cache of the cluster.

The scheduler, the controllers, the kubelet and the proxy never poll the
apiserver. For each resource they care about they run an `Informer` (client-go's
SharedIndexInformer): a *reflector* lists every object once (in pages of 500),
then watches for changes from the list's resourceVersion, and applies each event
to a `Store` (client/store.py) — an indexed in-memory map keyed "namespace/name".
Reads (listers) come from the store; writes go to the apiserver, and come back
through the watch.

How the reflector keeps the cache right:

- Every event, bookmarks included, advances the last-seen resourceVersion, so a
  broken watch (the stream ends, the apiserver restarts: `Unavailable`) resumes
  exactly where it stopped, after a jittered back-off.
- If that version was compacted away (`Gone`), it relists and *replaces* the
  store; handlers are told the difference (adds, updates, deletes), so a
  controller that missed a deletion while disconnected still hears about it.
- With a resync period, every cached object is handed to `on_update(obj, obj)`
  periodically, so level-triggered controllers re-check the world even when
  nothing changed.

Handlers (`add_handler`) are told about changes in order, each handler in its
own task, so a slow one delays only itself. In Flotilla they do one thing: put
the object's key on a `WorkQueue` (`enqueue`). They receive the cached objects
themselves: **never mutate an object from a handler or a store — copy it first**
(`new = type(obj)(); new.CopyFrom(obj)`), or every other reader sees the change.

`InformerFactory` shares one informer (one list + watch) per resource and
selector among all the components of a process.

This module is one job, keeping a cache current and telling handlers what
changed: the reflector loop, the per-handler notification queues and the
factory that shares informers all serve it (the cache itself is client/store.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import Message

from client.api import Client, WatchEvent
from client.store import Change, Store, key_of, resource_version

# The cache's names, importable from here as before the store had its own module.
from client.store import field_index as field_index
from client.store import label_index as label_index
from client.store import split_key as split_key
from client.workqueue import WorkQueue
from proto import kinds
from proto.errors import ApiError, BadRequest, Gone, NotFound

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# client-go's reflector page size: big lists arrive in pieces the apiserver can serve cheaply.
PAGE_SIZE = 500
# Pauses between failed list/watch attempts double from RETRY_INITIAL up to RETRY_MAX seconds.
RETRY_INITIAL = 0.1
RETRY_MAX = 30.0


# ---------------------------------------------------------------- handlers


@dataclass
class EventHandler(Generic[M]):
    on_add: Callable[[M], object] | None = None
    on_update: Callable[[M, M], object] | None = None
    on_delete: Callable[[M], object] | None = None


class _Listener(Generic[M]):
    """One handler's ordered notification queue, drained by its own task (client-go's processorListener).

    None in the queue marks the end of the initial adds: the handler has seen the whole list.
    """

    def __init__(self, handler: EventHandler[M]) -> None:
        self.handler = handler
        self.pending: asyncio.Queue[Change[M] | None] = asyncio.Queue()
        self.synced = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while True:
            change = await self.pending.get()
            if change is None:
                self.synced.set()
                continue
            try:
                result = self._call(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # A broken handler must not stop the notifications that follow.
                obj = change.new if change.new is not None else change.old
                log.exception("informer handler failed on %s", key_of(obj) if obj is not None else "?")

    def _call(self, change: Change[M]) -> object:
        h = self.handler
        if change.old is None:
            return h.on_add(change.new) if h.on_add and change.new is not None else None
        if change.new is None:
            return h.on_delete(change.old) if h.on_delete else None
        return h.on_update(change.old, change.new) if h.on_update else None


# ---------------------------------------------------------------- informer


class Informer(Generic[M]):
    """List + watch one resource into a `Store`, and tell handlers what changed.

    Run it with `await informer.run()` (or through an `InformerFactory`), wait for
    `wait_synced()`, then read `informer.store`.
    """

    def __init__(
        self,
        client: Client,
        cls: type[M],
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        resync_period: float = 0.0,
    ) -> None:
        self.client = client
        self.cls = cls
        self.kind = kinds.for_message(cls())
        self.namespace = namespace if self.kind.namespaced else ""
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.store: Store[M] = Store()
        self.resource_version = ""  # the last version the cache reflects; a re-watch starts here
        self._listeners: list[_Listener[M]] = []
        self._synced = asyncio.Event()
        self._stopped = asyncio.Event()  # set when run() ended, by stop() or a fatal error
        self._error: ApiError | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._received = 0  # watch events applied, bookmarks included: the reflector's sign of health

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        sel = ",".join(s for s in (self.label_selector, self.field_selector) if s)
        return f"<Informer {self.kind.resource}{where}{f' ({sel})' if sel else ''}>"

    # ---------------------------------------------------------------- handlers

    def add_handler(
        self,
        on_add: Callable[[M], object] | None = None,
        on_update: Callable[[M, M], object] | None = None,
        on_delete: Callable[[M], object] | None = None,
    ) -> None:
        """Be told of adds, updates (old, new) and deletes (the last known state).

        Handlers may be plain or async functions; they get the cached objects and
        must not mutate them. A handler added after the cache synced is first
        told of every cached object as an add, like one added before.
        """
        listener = _Listener(EventHandler(on_add, on_update, on_delete))
        self._listeners.append(listener)
        if self._synced.is_set():
            for obj in self.store.list():
                listener.pending.put_nowait(Change(None, obj))
            listener.pending.put_nowait(None)
        if self._task is not None:
            listener.start()

    def _notify(self, change: Change[M]) -> None:
        for listener in self._listeners:
            listener.pending.put_nowait(change)

    # ---------------------------------------------------------------- sync state

    @property
    def has_synced(self) -> bool:
        """True once the first list is in the store and every handler has been told of it."""
        return self._synced.is_set() and all(lst.synced.is_set() for lst in self._listeners)

    async def wait_synced(self) -> None:
        """Wait for `has_synced`; raises the error that stopped the informer, if one did."""
        synced = asyncio.ensure_future(self._synced.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((synced, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
            stopped.cancel()
        if self._error is not None:
            raise self._error
        if not self._synced.is_set():
            raise RuntimeError(f"{self!r} stopped before it synced")
        for listener in list(self._listeners):
            await listener.synced.wait()

    # ---------------------------------------------------------------- running

    async def run(self) -> None:
        """List, then watch until `stop()`; raises only errors retrying cannot fix (a bad selector).

        Run again after `stop()`, it resumes watching from its last resourceVersion.
        """
        if self._task is not None:
            raise RuntimeError(f"{self!r} is already running")
        self._stopping = False
        self._stopped.clear()
        self._task = asyncio.get_running_loop().create_task(self._reflect())
        for listener in self._listeners:
            listener.start()
        resync = asyncio.get_running_loop().create_task(self._resync()) if self.resync_period > 0 else None
        try:
            await self._task
        except asyncio.CancelledError:
            # stop() cancels the reflector; only a cancellation of run() itself propagates.
            current = asyncio.current_task()
            if not self._stopping or (current is not None and current.cancelling()):
                raise
        except ApiError as err:
            self._error = err
            raise
        finally:
            self._task.cancel()
            self._task = None
            if resync is not None:
                resync.cancel()
            for listener in self._listeners:
                listener.stop()
            self._stopped.set()

    def stop(self) -> None:
        """Stop watching; `run()` returns soon after. The store keeps its last contents."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    async def _reflect(self) -> None:
        delay = _Backoff(RETRY_INITIAL, RETRY_MAX)
        # Run again after stop(), the cache resumes from where it stopped (relisting if that is Gone).
        relist = not self._synced.is_set()
        while True:
            received = self._received
            try:
                if relist:
                    await self._list_and_replace()
                    relist = False
                await self._watch()
            except Gone as err:
                log.info("%r: %s; relisting", self, err)
                relist = True
            except (BadRequest, NotFound):
                raise  # a bad selector or an unserved resource will not fix itself
            except ApiError as err:
                log.warning("%r: list/watch failed, retrying: %s", self, err)
            # A watch that delivered events was healthy: resume at once. Otherwise back off,
            # so a down apiserver is not hammered by every informer of every component.
            if self._received > received:
                delay.reset()
            else:
                await asyncio.sleep(delay.next())

    async def _list_and_replace(self) -> None:
        items, version = await self._list_all()
        for change in self.store.replace(items):
            self._notify(change)
        self.resource_version = version
        if not self._synced.is_set():
            self._synced.set()
            for listener in self._listeners:
                listener.pending.put_nowait(None)

    async def _list_all(self) -> tuple[list[M], str]:
        items: list[M] = []
        token = ""
        while True:
            try:
                page = await self.client.list(
                    self.cls, self.namespace, label_selector=self.label_selector,
                    field_selector=self.field_selector, limit=PAGE_SIZE, continue_token=token)
            except Gone:
                if not token:
                    raise
                # The continue token's snapshot was compacted mid-list: take it all in one go.
                page = await self.client.list(self.cls, self.namespace, label_selector=self.label_selector,
                                              field_selector=self.field_selector)
                return page.items, page.resource_version
            items.extend(page.items)
            if not page.continue_token:
                return items, page.resource_version
            token = page.continue_token

    async def _watch(self) -> None:
        """Apply watch events until the stream ends."""
        # watch() is an async generator: close it explicitly so its gRPC call ends with us.
        stream = cast(AsyncGenerator[WatchEvent[M], None], self.client.watch(
            self.cls, self.namespace, label_selector=self.label_selector,
            field_selector=self.field_selector, resource_version=self.resource_version))
        try:
            async for event in stream:
                self._apply(event)
        finally:
            await stream.aclose()

    def _apply(self, event: WatchEvent[M]) -> None:
        obj = event.object
        if obj is not None:
            if event.type == "DELETED":
                # Handlers get the object's final state from the event, as in client-go.
                self.store.delete(key_of(obj))
                self._notify(Change(obj, None))
            else:
                # ADDED for a cached key or MODIFIED for an unknown one can follow a re-watch;
                # what the store held decides which handler runs.
                self._notify(Change(self.store.put(obj), obj))
        self._received += 1
        version = event.resource_version or (resource_version(obj) if obj is not None else "")
        if version:
            self.resource_version = version

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            if self._synced.is_set():
                for obj in self.store.list():
                    self._notify(Change(obj, obj))


class _Backoff:
    """Jittered exponential delays between reflector retries."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        # Jitter spreads the reconnects of many informers after an apiserver restart.
        return delay * (1 + 0.2 * random.random())

    def reset(self) -> None:
        self._next = self.initial


# ---------------------------------------------------------------- factory


class InformerFactory:
    """One informer per (kind, namespace, selectors), shared by every component of a process."""

    def __init__(self, client: Client, *, resync_period: float = 0.0) -> None:
        self.client = client
        self.resync_period = resync_period
        self._informers: dict[tuple[str, str, str, str], Informer[Any]] = {}
        self._tasks: dict[tuple[str, str, str, str], asyncio.Task[None]] = {}

    def informer(
        self, cls: type[M], namespace: str = "", label_selector: str = "", field_selector: str = ""
    ) -> Informer[M]:
        """The shared informer for these arguments, created on first use (start() runs it)."""
        kind = kinds.for_message(cls())
        key = (kind.resource, namespace if kind.namespaced else "", label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self.client, cls, namespace=namespace, label_selector=label_selector,
                                field_selector=field_selector, resync_period=self.resync_period)
            self._informers[key] = informer
        return cast(Informer[M], informer)

    def start(self) -> None:
        """Run every informer not yet running, each in its own task (call again after adding more)."""
        loop = asyncio.get_running_loop()
        for key, informer in self._informers.items():
            if key not in self._tasks:
                task = loop.create_task(informer.run(), name=repr(informer))
                task.add_done_callback(_log_failure)
                self._tasks[key] = task

    async def wait_for_cache_sync(self) -> None:
        """Wait until every started informer has synced (raises if one failed for good)."""
        await asyncio.gather(*(self._informers[key].wait_synced() for key in self._tasks))

    def stop(self) -> None:
        for informer in self._informers.values():
            informer.stop()
        self._tasks.clear()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %s", task.get_name(), task.exception())


# ---------------------------------------------------------------- wiring


def enqueue(
    informer: Informer[M], queue: WorkQueue[str], key: Callable[[M], str | None] = key_of
) -> None:
    """Put the key of every added, updated or deleted object on `queue` (sample-controller's handlers).

    `key` maps an object to the key to sync (None to ignore it), e.g. a pod to its owner's key.
    """

    def put(obj: M) -> None:
        k = key(obj)
        if k is not None:
            queue.add(k)

    informer.add_handler(on_add=put, on_update=lambda _old, new: put(new), on_delete=put)
