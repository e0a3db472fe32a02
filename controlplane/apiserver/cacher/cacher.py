"""The apiserver's watch cache: one etcd watch per resource, every list and watch served from memory.

kube-apiserver's Cacher (staging/src/k8s.io/apiserver/pkg/storage/cacher/cacher.go).
Without it every client watch is its own etcd watch and every list an etcd
range decoded in Python, so the apiserver's cost grows with nodes times
watchers; with it etcd sees one watch per resource, and a thousand kubelets
watching their pods cost one decoding per change.

`ResourceCache` is one resource's: a reflector task lists the prefix once, then
follows it with one etcd watch on a stream of its own (storage.WatchStream),
applying each change to the WatchCache (store.py) and offering it to every
client watcher (watchers.py). It starts lazily, at the first list or watch of
its resource, so resources nobody reads cost nothing; the first reader waits
for the initial list.

Reads, as in Kubernetes:
- resourceVersion "0": whatever the cache holds now (the cheapest read);
- resourceVersion N: once the cache has reached N (504 "Too large resource
  version" if etcd has not);
- no resourceVersion (a consistent read): the cache is asked to catch up with
  etcd's current revision first — a count-only range gives the revision, and a
  progress request on the cache's watch confirms nothing under the prefix
  changed since (ConsistentListFromCache). If it does not catch up within
  three seconds, the caller reads etcd instead, as Kubernetes falls back.

Watches from resourceVersion N replay the buffer after N. Unlike Kubernetes,
whose buffer outlives etcd's compaction, one from history etcd has compacted
is told 410 Gone as it was before the cache (Flotilla's clients and tests rely
on "compacted means relist"); one from before the cache's own list (a client
resuming across an apiserver restart) is served from etcd by the registry.

The reflector resumes a broken watch from the revision it reached; when etcd
has compacted that away (the cache fell behind its own watch), or etcd's
history went backwards (restored from a backup), it lists again, and every
client watcher is ended so its client resumes — or, older than the new
buffer, is told 410 Gone and lists again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from controlplane.apiserver import pagination
from controlplane.apiserver.cacher.store import NODE_NAME, CacheEvent, Decode, Encode, WatchCache
from controlplane.apiserver.cacher.watchers import CacheWatcher, Event
from controlplane.apiserver.storage import Storage, Stored, WatchStream, prefix_end
from proto import kinds
from proto.errors import BadRequest, Gone, Timeout, Unavailable
from proto.selectors import FieldSelector, LabelSelector

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000  # events kept per resource (--watch-cache-size)
FRESH_TIMEOUT = 3.0  # how long a read waits for the cache to catch up before going to etcd (Kubernetes: 3 s)
_LIST_CHUNK = 10_000
_RETRY = 0.5
# etcd 3.4 (before 3.4.25) answers a progress request with its current revision even while a new watch is still
# replaying its backlog (etcd-io/etcd#15220), so answers in a new stream's first moments are not believed (etcd
# replays an unsynced watch's backlog every 100 ms); readers waiting meanwhile ask again.
_UNSYNCED = 0.5


class NotFresh(Exception):
    """The cache did not reach the revision a read needs in time: read etcd instead."""


class ResourceCache:
    """One resource's cache: its reflector, its store and buffer, its client watchers."""

    def __init__(self, kind: kinds.Kind, storage: Storage, *, capacity: int, decode: Decode, encode: Encode,
                 max_pending: int) -> None:
        self.kind = kind
        self.storage = storage
        self.cache = WatchCache(kind, capacity, decode, encode)
        self.prefix = f"/registry/{kind.storage_resource}/".encode()
        self.ready = asyncio.Event()
        self.relists = 0  # initial list included (tests and benches read it)
        self.listed_revision = 0  # the revision of the last list: the buffer's history starts there
        self._max_pending = max_pending
        self._watchers: set[CacheWatcher] = set()
        self._by_node: dict[str, set[CacheWatcher]] = {}  # kubelets' pod watches, by the node they select
        self._advanced = asyncio.Event()  # set (and replaced) whenever cache.revision moves
        self._progress_asked = False
        self._bookmark: asyncio.Future[int] | None = None
        self._stream: WatchStream | None = None
        self._task = asyncio.create_task(self._reflect(), name=f"watch cache {kind.resource}")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for watcher in list(self._watchers):
            watcher.stop()

    # ---------------------------------------------------------------- the reflector

    async def _reflect(self) -> None:
        must_list = True
        while True:
            try:
                if must_list:
                    await self._relist()
                    must_list = False
                elif await self.storage.revision() < self.cache.revision:
                    log.warning("%s cache: etcd's revision went backwards; listing again", self.kind.resource)
                    must_list = True
                    continue
                self._stream = self.storage.watch_stream(self.prefix, self.cache.revision + 1)
                trusted_from = time.monotonic() + _UNSYNCED
                async for batch in self._stream.batches():
                    for change in batch.changes:
                        self._dispatch(self.cache.apply(change))
                    if batch.progress and time.monotonic() >= trusted_from:
                        self._progress_asked = False
                        self.cache.advance(batch.progress)
                    self._wake_readers()
            except asyncio.CancelledError:
                raise
            except Gone as exc:
                log.warning("%s cache: %s; listing again", self.kind.resource, exc)
                must_list = True
            except Exception as exc:  # etcd down or restarting: resume the watch when it answers
                log.warning("%s cache: watch ended (%s); resuming", self.kind.resource, exc)
                await asyncio.sleep(_RETRY)
            finally:
                self._stream = None
                self._progress_asked = False

    async def _relist(self) -> None:
        """Fill the store from one consistent read of the prefix, page by page at one revision."""
        start, end = self.prefix, prefix_end(self.prefix)
        items: list[Stored] = []
        revision = 0
        while True:
            page = await self.storage.range(start, end, limit=_LIST_CHUNK, revision=revision,
                                            skip_unreadable=True)
            revision = revision or page.revision
            items.extend(page.items)
            if not page.more or not page.items:
                break
            start = page.items[-1].key + b"\0"
        self.cache.replace(items, revision)
        self.listed_revision = revision
        self.relists += 1
        # Watchers were fed from the history the new list replaces: end them, so each resumes from the buffer
        # that starts here, or lists again.
        for watcher in list(self._watchers):
            self._remove(watcher)
            watcher.stop()
        self.ready.set()
        self._wake_readers()

    def _wake_readers(self) -> None:
        self._advanced.set()
        self._advanced = asyncio.Event()

    def _dispatch(self, event: CacheEvent) -> None:
        targets = self._by_node.get("", set())
        if self._by_node and (event.current is not None or event.previous is not None):
            nodes = {o.node_name for o in (event.current, event.previous) if o is not None and o.node_name}
            targets = targets.union(*(self._by_node.get(node, ()) for node in nodes))
        for watcher in list(targets):
            watcher.offer(event)
            if watcher.stopped:
                self._remove(watcher)

    # ---------------------------------------------------------------- freshness

    async def wait_ready(self) -> None:
        """Until the first list is in; NotFresh if it takes too long (etcd away): the caller reads etcd."""
        try:
            await asyncio.wait_for(self.ready.wait(), FRESH_TIMEOUT * 10)
        except TimeoutError:
            raise NotFresh(f"{self.kind.resource} cache not filled yet") from None

    async def wait_fresh(self, revision: int, timeout: float = FRESH_TIMEOUT) -> None:
        """Until the cache has everything up to `revision`, asking etcd for progress; NotFresh past `timeout`."""
        await self.wait_ready()
        deadline = time.monotonic() + timeout
        while self.cache.revision < revision:
            if self._stream is not None and not self._progress_asked:
                self._progress_asked = True
                self._stream.request_progress()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotFresh(f"{self.kind.resource} cache at {self.cache.revision}, not {revision}")
            try:
                await asyncio.wait_for(self._advanced.wait(), min(remaining, 0.5))
            except TimeoutError:
                self._progress_asked = False  # the answer was lost with a broken stream: ask again

    async def consistent_revision(self) -> int:
        """etcd's current revision, once the cache has caught up with it."""
        revision = await self.storage.revision()
        await self.wait_fresh(revision)
        return revision

    def bookmark_revision(self) -> asyncio.Future[int]:
        """The revision a bookmark may carry; quiet watchers asking at once share one answer."""
        if self._bookmark is None or self._bookmark.done():
            self._bookmark = asyncio.ensure_future(self._caught_up_revision())
        return self._bookmark

    async def _caught_up_revision(self) -> int:
        """The cache caught up with etcd's revision (or where it is, if etcd is away)."""
        try:
            return await self.consistent_revision()
        except (NotFresh, Unavailable, TimeoutError):
            return self.cache.revision

    async def reached(self, revision: int) -> None:
        """A read at resourceVersion N: wait for the cache to reach N; 504 if etcd has not, or it does not."""
        if self.cache.revision >= revision:
            return
        current = await self.storage.revision()
        if revision > current:
            raise Timeout(f"Too large resource version: {revision}, current: {current}")
        try:
            await self.wait_fresh(revision)
        except NotFresh:
            raise Timeout(f"Too large resource version: {revision}, current: {self.cache.revision}") from None

    # ---------------------------------------------------------------- lists

    async def list(self, namespace: str, labels: LabelSelector, fields: FieldSelector, limit: int,
                   resource_version: str) -> tuple[list[bytes], int, str, int]:
        """One page as Registry.list returns it, from memory. A limited list's continue token names the
        cache's revision: the following pages are read from etcd at that revision (one snapshot throughout)."""
        await self.wait_ready()
        if resource_version == "":
            await self.consistent_revision()
        elif resource_version != "0":
            await self.reached(_revision(resource_version))
        found = self.cache.select(namespace, labels, fields)
        revision = self.cache.revision
        if limit and len(found) > limit:
            selective = not (labels.empty() and fields.empty())
            token = pagination.encode_continue(found[limit - 1].key + b"\0", revision)
            return [c.raw for c in found[:limit]], revision, token, 0 if selective else len(found) - limit
        return [c.raw for c in found], revision, "", 0

    # ---------------------------------------------------------------- watchers

    async def serves_watch(self, start: int | None) -> bool:
        """Whether this cache serves a watch from `start` (None: from now). Not one asking for history from
        before the cache listed — history it never held, rather than history its buffer let go: a client
        resuming across an apiserver restart does, and the registry serves it from etcd while etcd keeps that
        history instead of telling it 410 Gone. Nor any while the cache cannot fill (etcd away)."""
        try:
            await self.wait_ready()
        except NotFresh:
            return False
        return start is None or start >= self.listed_revision

    def _add(self, watcher: CacheWatcher) -> None:
        self._watchers.add(watcher)
        node = watcher.fields.value_of(NODE_NAME) if self.kind.resource == "pods" else None
        self._by_node.setdefault(node or "", set()).add(watcher)

    def _remove(self, watcher: CacheWatcher) -> None:
        self._watchers.discard(watcher)
        for node, watchers in list(self._by_node.items()):
            if watcher in watchers:
                watchers.discard(watcher)
                if not watchers and node:
                    del self._by_node[node]

    async def watch(self, namespace: str, resource_version: str, labels: LabelSelector, fields: FieldSelector,
                    bookmark_interval: float, start: int | None) -> AsyncIterator[Event]:
        """A client watch: from `start` (a resourceVersion, replayed from the buffer), or with no start every
        selected object as ADDED at the cache's revision first (after catching up with etcd unless "0")."""
        fields.matches(self.kind.message())  # an unsupported field label is the client's error, now
        await self.wait_ready()
        if start is None:
            if resource_version != "0":
                with contextlib.suppress(NotFresh):  # a watch may start a little behind: its events follow
                    await self.wait_fresh(await self.storage.revision())
            start_at = self.cache.revision
            watcher = CacheWatcher(namespace=namespace, labels=labels, fields=fields, start_revision=start_at,
                                   max_pending=self._max_pending)
            for cached in self.cache.select(namespace, labels, fields):
                watcher.add(Event("ADDED", cached.raw, start_at))
        else:
            await self.reached(start)
            # History etcd compacted away is gone for the cache's watchers too, though its buffer may hold it:
            # a client resuming from there is told 410 as it would be without the cache, and lists again.
            await self.storage.check_history(start + 1)
            watcher = CacheWatcher(namespace=namespace, labels=labels, fields=fields, start_revision=start,
                                   max_pending=self._max_pending)
            for change in self.cache.since(start):  # Gone when older than the buffer
                watcher.offer(change)
        # From here on the reflector offers every change; nothing was awaited since the snapshot or replay.
        self._add(watcher)
        try:
            async for event in watcher.events(bookmark_interval, self.bookmark_revision):
                yield event
        finally:
            watcher.stop()
            self._remove(watcher)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)


def _revision(resource_version: str) -> int:
    try:
        revision = int(resource_version)
    except ValueError:
        raise BadRequest(f'invalid resource version "{resource_version}"') from None
    if not 0 <= revision < 2**63 - 1:
        raise BadRequest(f'invalid resource version "{resource_version}"')
    return revision


class Cacher:
    """Every resource's cache, started at its first read (controlplane/apiserver/registry.py asks here)."""

    def __init__(self, storage: Storage, *, decode: Decode, encode: Encode, capacity: int = DEFAULT_CAPACITY,
                 max_pending: int | None = None) -> None:
        self.storage = storage
        self.capacity = capacity
        self._decode, self._encode = decode, encode
        self._max_pending = max_pending or max(capacity, 1000)
        self._caches: dict[str, ResourceCache] = {}

    def cacheable(self, kind: kinds.Kind) -> bool:
        """Kinds stored in etcd as their protobuf messages (reports kept in memory are not)."""
        return not kind.in_memory

    def resource(self, kind: kinds.Kind) -> ResourceCache:
        # Keyed as etcd is: the served versions of one custom resource share their storage, so one cache.
        cache = self._caches.get(kind.storage_resource)
        if cache is None:
            cache = self._caches[kind.storage_resource] = ResourceCache(
                kind, self.storage, capacity=self.capacity, decode=self._decode, encode=self._encode,
                max_pending=self._max_pending)
        return cache

    def stored(self, kind: kinds.Kind, key: bytes) -> Stored | None:
        """The cache's copy of one object as etcd holds it, if its resource's cache is running and has it (a
        first guess for an update; it may be behind etcd)."""
        cache = self._caches.get(kind.storage_resource)
        if cache is None or not cache.ready.is_set():
            return None
        cached = cache.cache.objects.get(key)
        if cached is None:
            return None
        return Stored(key, cached.raw[:cached.value_size], cached.revision)

    def started(self) -> list[ResourceCache]:
        return list(self._caches.values())

    async def stop(self) -> None:
        for cache in self._caches.values():
            await cache.stop()
        self._caches.clear()
