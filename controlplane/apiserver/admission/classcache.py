"""The class caches of the defaulting plugins: StorageClasses and IngressClasses as the registry watches them.

DefaultStorageClass and DefaultIngressClass each give a new object the
cluster's default class: the one annotated as the default (`storageclass.
kubernetes.io/is-default-class` / `ingressclass.kubernetes.io/is-default-class`
set to "true"); with several, the newest, then by name — as Kubernetes picks
since 1.28 instead of refusing. Both read the classes from a cache the registry
keeps current with a watch (a PolicyWatcher: `observe` each event, `reset`
before a relist); this module is that cache and that choice, once.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from google.protobuf.message import Message

from proto import kinds

C = TypeVar("C", bound=Message)


def newest_default(classes: list[C], annotation: str) -> C | None:
    """The default class among `classes` by `annotation`: the newest annotated one (then by name), or None."""
    defaults = [c for c in classes if c.metadata.annotations.get(annotation) == "true"]  # type: ignore[attr-defined]
    if not defaults:
        return None
    return max(defaults, key=lambda c: (c.metadata.creation_timestamp.ToNanoseconds(),  # type: ignore[attr-defined]
                                        c.metadata.name))  # type: ignore[attr-defined]


class ClassCache(Generic[C]):
    """Classes of one kind by name, kept by the registry's watch; `default()` is the cluster's default one."""

    policy_kind: ClassVar[kinds.Kind]
    annotation: ClassVar[str]

    def __init__(self) -> None:
        self.classes: dict[str, C] = {}

    def observe(self, event_type: str, obj: Message) -> None:
        name = obj.metadata.name  # type: ignore[attr-defined]
        if event_type == "DELETED":
            self.classes.pop(name, None)
        else:
            self.classes[name] = obj  # type: ignore[assignment]

    def reset(self) -> None:
        self.classes.clear()

    def default(self) -> C | None:
        return newest_default(list(self.classes.values()), self.annotation)
