"""In-memory objects: the usage reports of metrics.k8s.io (PodMetrics, NodeMetrics).

Kubelets replace these every few seconds and nobody needs yesterday's, so the
apiserver keeps the latest of each in memory, as metrics-server does, and
spares etcd the churn. Writes are upserts; reads are get and list; nothing
watches them. A report older than `max_age` is dropped (its node went away).
"""

from __future__ import annotations

import time

from google.protobuf.message import Message

from proto import kinds
from proto.errors import BadRequest, NotFound
from proto.selectors import FieldSelector, LabelSelector


class MemoryStore:
    def __init__(self, max_age: float = 120.0) -> None:
        self.max_age = max_age
        self._objects: dict[tuple[str, str, str], tuple[float, Message]] = {}
        self._version = 0

    def put(self, kind: kinds.Kind, obj: Message) -> Message:
        meta = obj.metadata  # type: ignore[attr-defined]
        if not meta.name:
            raise BadRequest(f"{kind.resource}: metadata.name: Required value")
        if not kind.namespaced:
            meta.namespace = ""
        obj.api_version, obj.kind = kind.api_version, kind.kind  # type: ignore[attr-defined]
        self._version += 1
        meta.resource_version = str(self._version)
        if not meta.HasField("creation_timestamp"):
            meta.creation_timestamp.FromSeconds(int(time.time()))
        self._objects[(kind.resource, meta.namespace, meta.name)] = (time.monotonic(), obj)
        return obj

    def _fresh(self, entry: tuple[float, Message] | None) -> Message | None:
        if entry is None or time.monotonic() - entry[0] > self.max_age:
            return None
        return entry[1]

    def get(self, kind: kinds.Kind, namespace: str, name: str) -> Message:
        obj = self._fresh(self._objects.get((kind.resource, namespace if kind.namespaced else "", name)))
        if obj is None:
            raise NotFound(f'{kind.resource}.{kind.group} "{name}" not found')
        return obj

    def list(self, kind: kinds.Kind, namespace: str, labels: LabelSelector, fields: FieldSelector) -> list[Message]:
        now = time.monotonic()
        stale = [key for key, (at, _) in self._objects.items() if now - at > self.max_age]
        for key in stale:
            del self._objects[key]
        found = [
            obj for (resource, ns, _), (_, obj) in sorted(self._objects.items())
            if resource == kind.resource and (not namespace or ns == namespace)
            and labels.matches(obj.metadata.labels) and fields.matches(obj)  # type: ignore[attr-defined]
        ]
        return found

    def delete(self, kind: kinds.Kind, namespace: str, name: str) -> Message:
        obj = self.get(kind, namespace, name)
        del self._objects[(kind.resource, namespace if kind.namespaced else "", name)]
        return obj

    @property
    def version(self) -> int:
        return self._version
