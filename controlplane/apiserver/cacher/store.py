"""The watch cache's memory for one resource: its objects now, and its recent history.

kube-apiserver's watchCache (staging/src/k8s.io/apiserver/pkg/storage/cacher/
watch_cache.go) in Python. Two structures, kept in step by `apply`:

- the store: every object of the resource as of `revision`, kept encoded with
  its resourceVersion (lists and watches send those bytes as they are) beside
  what selectors ask most — namespace, name, labels, a pod's spec.nodeName —
  taken out when its change arrives (the one decoding), with indexes on
  namespace, spec.nodeName (every kubelet watches its own pods) and label
  pairs. A selector on any other field decodes the object again when asked:
  a decoded pod costs ~9 KiB of memory against ~1 KiB encoded, and 30,000
  of them must fit the apiserver in well under a gigabyte (bench/cache_memory.py);
- the ring buffer: the last `capacity` changes, so a watch resuming from a
  resourceVersion inside it replays from memory; one older than the buffer is
  told 410 Gone ("too old resource version") and lists again.

Nothing here awaits: one change is applied whole between two awaits of the
event loop, so a reader sees the store and the buffer at one revision.
"""

from __future__ import annotations

import bisect
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import Message

from controlplane.apiserver.storage import Change, Stored
from proto import kinds
from proto.errors import Gone
from proto.selectors import FieldSelector, LabelSelector, field_value

# How a stored value becomes what the API serves: the registry's codec (decode sets resourceVersion;
# encode appends it to the stored bytes without decoding them).
Decode = Callable[[kinds.Kind, Stored], Message]
Encode = Callable[[kinds.Kind, Stored], bytes]

NODE_NAME = "spec.nodeName"


@dataclass(slots=True)
class CachedObject:
    """One object as the cache holds it: encoded, with the fields selectors ask most."""

    kind: kinds.Kind
    key: bytes
    raw: bytes  # encoded with its resourceVersion: what a list or watch sends
    value_size: int  # raw[:value_size] is the value as stored (resourceVersion is appended after it)
    revision: int
    namespace: str
    name: str
    node_name: str  # a pod's spec.nodeName ("" for other kinds)
    labels: dict[str, str]

    def message(self) -> Message:
        """The object decoded afresh (for a selector on a field not kept here)."""
        obj = self.kind.message()
        obj.ParseFromString(self.raw)
        return obj

    def matches(self, labels: LabelSelector, fields: FieldSelector) -> bool:
        if not labels.matches(self.labels):
            return False
        decoded: Message | None = None
        for requirement in fields.requirements:
            value = self._kept(requirement.path)
            if value is None:
                decoded = decoded or self.message()
                value = field_value(decoded, requirement.path)
            if (value == requirement.value) == requirement.negate:
                return False
        return True

    def _kept(self, path: str) -> str | None:
        if path == "metadata.name":
            return self.name
        if path == "metadata.namespace":
            return self.namespace
        if path == NODE_NAME and self.kind.resource == "pods":
            return self.node_name
        return None


@dataclass(slots=True)
class CacheEvent:
    """One change as the buffer keeps it: the object after (None once deleted) and before (None if new)."""

    revision: int
    current: CachedObject | None
    previous: CachedObject | None
    deleted_raw: bytes = b""  # a deletion: the last state, carrying the deletion's resourceVersion


class WatchCache:
    """The store and ring buffer of one resource."""

    def __init__(self, kind: kinds.Kind, capacity: int, decode: Decode, encode: Encode) -> None:
        if capacity < 1:
            raise ValueError("the watch cache needs room for at least one event")
        self.kind = kind
        self._decode, self._encode = decode, encode
        self._pods = kind.resource == "pods"
        self.objects: dict[bytes, CachedObject] = {}
        self._sorted_keys: list[bytes] = []  # lists come back in key order, as etcd returns them
        self._by_namespace: dict[str, set[bytes]] = {}
        self._by_node: dict[str, set[bytes]] = {}
        self._by_label: dict[tuple[str, str], set[bytes]] = {}
        self.events: deque[CacheEvent] = deque(maxlen=capacity)
        self.revision = 0  # the store is etcd's state under the prefix at this revision
        self.oldest = 0  # the buffer holds every change after this revision

    # ---------------------------------------------------------------- filling

    def replace(self, items: Iterable[Stored], revision: int) -> None:
        """Start again from a list read at `revision`: the buffer restarts empty there."""
        self.objects.clear()
        self._by_namespace.clear()
        self._by_node.clear()
        self._by_label.clear()
        self.events.clear()
        for stored in items:
            self._index(self._cached(stored))
        self._sorted_keys = sorted(self.objects)
        self.revision = self.oldest = revision

    def apply(self, change: Change) -> CacheEvent:
        """One etcd change into the store and the buffer."""
        previous = self.objects.get(change.key)
        if previous is not None:
            self._unindex(previous)
        current = None
        deleted_raw = b""
        if change.type == "PUT":
            current = self._cached(Stored(change.key, change.value, change.revision))
            self._index(current)
            if previous is None:
                bisect.insort(self._sorted_keys, change.key)
        else:
            if previous is not None:
                index = bisect.bisect_left(self._sorted_keys, change.key)
                del self._sorted_keys[index]
            elif change.previous:  # not ours to know (cannot happen once listed), but etcd told us its last state
                previous = self._cached(Stored(change.key, change.previous, change.revision))
            if previous is not None:
                value = previous.raw[:previous.value_size]
                deleted_raw = self._encode(self.kind, Stored(change.key, value, change.revision))
        event = CacheEvent(change.revision, current, previous, deleted_raw)
        if len(self.events) == self.events.maxlen:
            self.oldest = self.events[0].revision  # about to fall out of the buffer
        self.events.append(event)
        self.revision = max(self.revision, change.revision)
        return event

    def advance(self, revision: int) -> None:
        """etcd says nothing under the prefix changed up to `revision` beyond what was applied."""
        self.revision = max(self.revision, revision)

    def _cached(self, stored: Stored) -> CachedObject:
        obj = self._decode(self.kind, stored)
        meta = obj.metadata  # type: ignore[attr-defined]
        node = sys.intern(obj.spec.node_name) if self._pods else ""  # type: ignore[attr-defined]
        # Interned: the same few label keys and values recur across thousands of objects.
        labels = {sys.intern(k): sys.intern(v) for k, v in meta.labels.items()}
        return CachedObject(self.kind, stored.key, self._encode(self.kind, stored), len(stored.value),
                            stored.revision, sys.intern(meta.namespace), meta.name, node, labels)

    def _index(self, cached: CachedObject) -> None:
        key = cached.key
        self.objects[key] = cached
        self._by_namespace.setdefault(cached.namespace, set()).add(key)
        if cached.node_name:
            self._by_node.setdefault(cached.node_name, set()).add(key)
        for pair in cached.labels.items():
            self._by_label.setdefault(pair, set()).add(key)

    def _unindex(self, cached: CachedObject) -> None:
        key = cached.key
        del self.objects[key]
        _discard(self._by_namespace, cached.namespace, key)
        if cached.node_name:
            _discard(self._by_node, cached.node_name, key)
        for pair in cached.labels.items():
            _discard(self._by_label, pair, key)

    # ---------------------------------------------------------------- reading

    def select(self, namespace: str, labels: LabelSelector, fields: FieldSelector) -> list[CachedObject]:
        """The objects a list asks for, in key order: the narrowest index first, then every selector."""
        candidates: list[set[bytes]] = []
        namespace = namespace or fields.value_of("metadata.namespace") or ""
        if namespace and self.kind.namespaced:
            candidates.append(self._by_namespace.get(namespace, set()))
        node = fields.value_of(NODE_NAME) if self._pods else None
        if node:  # unbound pods ("") are not indexed
            candidates.append(self._by_node.get(node, set()))
        for requirement in labels.requirements:
            if requirement.operator in ("=", "==", "in") and len(requirement.values) == 1:
                candidates.append(self._by_label.get((requirement.key, requirement.values[0]), set()))
        if candidates:
            keys = sorted(min(candidates, key=len))  # type: ignore[arg-type]
        else:
            keys = self._sorted_keys
        everything = labels.empty() and fields.empty()
        found = []
        for key in keys:
            cached = self.objects[key]
            if namespace and self.kind.namespaced and cached.namespace != namespace:
                continue
            if everything or cached.matches(labels, fields):
                found.append(cached)
        return found

    def since(self, revision: int) -> list[CacheEvent]:
        """The buffered changes after `revision`; Gone when the buffer no longer reaches back that far."""
        if revision < self.oldest:
            raise Gone(f"too old resource version: {revision} ({self.oldest})")
        start = len(self.events)
        while start > 0 and self.events[start - 1].revision > revision:
            start -= 1
        return [self.events[index] for index in range(start, len(self.events))]


def _discard(index: dict[str, set[bytes]] | dict[tuple[str, str], set[bytes]], value: object, key: bytes) -> None:
    keys = index.get(value)  # type: ignore[call-overload]
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[value]  # type: ignore[arg-type]
