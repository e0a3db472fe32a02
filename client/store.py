"""The informer's cache: objects by "namespace/name" key, with indexes (client-go's Indexer).

An `Informer` fills a `Store` from its list and watch; everything else only
reads it (client-go calls those readers listers): get by key or name, list a
namespace, list by an index such as pods by `spec.nodeName`, select by labels.
Indexes are functions from an object to the values it is filed under; the
`label_index` and `field_index` factories are cached so that components sharing
an informer register the very same function. `Store.replace` is the relist: it
makes the cache hold exactly what the apiserver listed and returns the
differences, so handlers hear about what changed while the watch was down.

Objects in a store are shared with every reader: never mutate one, copy it first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from proto import selectors

M = TypeVar("M", bound=Message)

NAMESPACE_INDEX = "namespace"

IndexFunc = Callable[[Any], list[str]]
"""Maps an object to the index values it is filed under (none, one or several)."""


# ---------------------------------------------------------------- keys


def key_of(obj: Message) -> str:
    """The cache key of an object: "namespace/name", or "name" for cluster-scoped kinds."""
    meta = _meta(obj)
    return f"{meta.namespace}/{meta.name}" if meta.namespace else str(meta.name)


def split_key(key: str) -> tuple[str, str]:
    """("namespace", "name") from a cache key; namespace is "" for cluster-scoped objects."""
    parts = key.split("/")
    if len(parts) == 1:
        return "", parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"unexpected key format: {key!r}")


def _meta(obj: Message) -> Any:
    return getattr(obj, "metadata")  # noqa: B009 - every kind has metadata; Message does not say so


def resource_version(obj: Message) -> str:
    return str(_meta(obj).resource_version)


# ---------------------------------------------------------------- indexes


def namespace_index(obj: Message) -> list[str]:
    return [str(_meta(obj).namespace)]


@functools.cache
def label_index(label: str) -> IndexFunc:
    """Index by one label's value (objects without the label are not indexed).

    Cached, so two components asking for the same index share one function and
    may both register it on a shared informer.
    """

    def index(obj: Message) -> list[str]:
        labels = _meta(obj).labels
        return [labels[label]] if label in labels else []

    return index


@functools.cache
def field_index(path: str) -> IndexFunc:
    """Index by a scalar field's JSON path such as "spec.nodeName"; unset reads as "", as in selectors."""

    def index(obj: Message) -> list[str]:
        return [selectors.field_value(obj, path)]

    return index


# ---------------------------------------------------------------- store


@dataclass(frozen=True)
class Change(Generic[M]):
    """What a handler is told: old None is an add, new None a delete, else an update.

    `Store.replace` returns these too; on a resync, old and new are the same object.
    """

    old: M | None
    new: M | None


class Store(Generic[M]):
    """An indexed cache of objects by key (client-go's Indexer); asyncio-only, not thread-safe.

    Objects returned are the cached ones: callers must not mutate them.
    """

    def __init__(self) -> None:
        self._items: dict[str, M] = {}
        self._indexers: dict[str, IndexFunc] = {}
        # index name -> index value -> keys filed under that value
        self._indices: dict[str, dict[str, set[str]]] = {}
        self.add_index(NAMESPACE_INDEX, namespace_index)

    # ---------------------------------------------------------------- indexes

    def add_index(self, name: str, index: IndexFunc) -> None:
        """Register an index; objects already cached are filed at once.

        Registering the same function under the same name again is a no-op (shared
        informers); another function under a taken name is a bug and raises.
        """
        existing = self._indexers.get(name)
        if existing is index:
            return
        if existing is not None:
            raise ValueError(f"index {name!r} is already registered with another function")
        self._indexers[name] = index
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._file(name, key, obj)

    def _file(self, name: str, key: str, obj: M) -> None:
        values = self._indices[name]
        for value in self._indexers[name](obj):
            values.setdefault(value, set()).add(key)

    def _unfile(self, name: str, key: str, obj: M) -> None:
        values = self._indices[name]
        for value in self._indexers[name](obj):
            keys = values.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del values[value]

    # ---------------------------------------------------------------- writes (the informer's)

    def put(self, obj: M) -> M | None:
        """Add or replace `obj`; returns the object it replaced, if any."""
        key = key_of(obj)
        old = self._items.get(key)
        for name in self._indexers:
            if old is not None:
                self._unfile(name, key, old)
            self._file(name, key, obj)
        self._items[key] = obj
        return old

    def delete(self, key: str) -> M | None:
        """Remove the object at `key`; returns it, or None if it was not cached."""
        old = self._items.pop(key, None)
        if old is not None:
            for name in self._indexers:
                self._unfile(name, key, old)
        return old

    def replace(self, objects: Iterable[M]) -> list[Change[M]]:
        """Make the store hold exactly `objects` (a relist); returns what differed.

        An object counts as changed when its resourceVersion differs, so a relist
        after a short disconnection reports only what really happened meanwhile.
        """
        fresh = {key_of(obj): obj for obj in objects}
        changes: list[Change[M]] = []
        for key in [k for k in self._items if k not in fresh]:
            changes.append(Change(self.delete(key), None))
        for obj in fresh.values():
            old = self.put(obj)
            if old is None or resource_version(old) != resource_version(obj):
                changes.append(Change(old, obj))
        return changes

    # ---------------------------------------------------------------- reads (listers)

    def get(self, key: str) -> M | None:
        return self._items.get(key)

    def get_by_name(self, namespace: str, name: str) -> M | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list_keys(self) -> list[str]:
        return list(self._items)

    def list_by_namespace(self, namespace: str) -> list[M]:
        return self.list_by_index(NAMESPACE_INDEX, namespace)

    def list_by_index(self, index_name: str, value: str) -> list[M]:
        """Objects filed under `value` in the index `index_name` (KeyError if no such index)."""
        if index_name not in self._indices:
            raise KeyError(f"no index named {index_name!r}")
        return [self._items[key] for key in sorted(self._indices[index_name].get(value, ()))]

    def index_values(self, index_name: str) -> list[str]:
        """The values the index holds objects under (e.g. every node name with pods)."""
        return sorted(self._indices[index_name])

    def select(self, selector: selectors.LabelSelector, namespace: str = "") -> list[M]:
        """Objects whose labels match `selector`, in `namespace` or (with "") every namespace."""
        candidates = self.list_by_namespace(namespace) if namespace else self.list()
        if selector.empty():
            return candidates
        return [obj for obj in candidates if selector.matches(_meta(obj).labels)]

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        # An empty cache is still a cache: `if informer.store:` must not mean "has objects".
        return True

    # Last in the class: below this line, `list` in an annotation would mean this method.
    def list(self) -> list[M]:
        return list(self._items.values())
