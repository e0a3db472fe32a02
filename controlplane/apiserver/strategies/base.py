"""The strategy interface: what a kind means at each step of a write.

As Kubernetes' pkg/registry/<group>/<resource>/strategy.go, one object per kind
tells the generic registry (registry.py) everything that differs between kinds,
so the registry itself never asks which kind it holds:

- `prepare_for_create` / `prepare_for_update`: the server's part of a write
  (a new pod's status is the kubelet's to fill; an update keeps the stored
  status, since status has its own subresource);
- `default`, then `validate` / `validate_update` / `validate_status_update`;
- `subresources` beyond `status`, and what a subresource write may change;
- graceful deletion: whether a deleted object must wait for someone
  (`begin_graceful_delete`), and whether a terminating one still must (`held`);
- storage hooks, given a `StoreContext`: `allocations` around a write (a
  Service's clusterIP and node ports), `after_write` and `after_delete`.

`Strategy` itself is the default. A kind whose only differences are its defaults
and its checks is a `Strategy(defaulter=..., validator=...)` entry in the table;
a kind with rules of its own (Pod, Service, Namespace, CSR...) is a subclass.
Generic steps (uid, creationTimestamp, generation on spec change, finalizers)
stay in the registry, since every kind shares them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver.allocators import ServiceAllocator
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.validation.field import Errors
from controlplane.apiserver.validation.meta import (
    is_dns1123_subdomain,
    validate_object_meta,
    validate_object_meta_update,
)
from proto import meta_pb2
from proto.kinds import Kind


@dataclass(frozen=True)
class StoreContext:
    """What a strategy's storage hooks may touch besides the object."""

    allocator: ServiceAllocator  # Services' clusterIPs and node ports, in etcd
    observe_namespace: Callable[[str, Message], None]  # NamespaceLifecycle's cache: (event type, namespace)


def object_meta(obj: Message) -> meta_pb2.ObjectMeta:
    meta = getattr(obj, "metadata", None)
    if not isinstance(meta, meta_pb2.ObjectMeta):
        raise TypeError(f"{type(obj).__name__} has no ObjectMeta")
    return meta


class Strategy:
    """The default strategy; each method is a hook a kind may override."""

    subresources: tuple[str, ...] = ()  # writable subresources besides `status`

    def __init__(self, *, defaulter: Callable[[Any], None] | None = None,
                 validator: Callable[[Any, Any], Errors] | None = None) -> None:
        # The kind's defaulting (defaults.py) and its own checks (validation/<group>.py), where it has them.
        self._defaulter = defaulter
        self._validator = validator

    def name_rule(self, name: str) -> list[str]:
        """What is wrong with `name` as this kind's metadata.name (most kinds: a DNS-1123 subdomain)."""
        return is_dns1123_subdomain(name)

    # ------------------------------------------------------------ create and update

    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        """Server-owned fields of a new object; `user` is the requester (None: the apiserver itself)."""

    def prepare_for_update(self, kind: Kind, new: Message, old: Message) -> None:
        """Carry over what a plain update may not change: the status, which has its own subresource."""
        if kind.has_status:
            new.ClearField("status")
            new.status.CopyFrom(old.status)  # type: ignore[attr-defined]

    def prepare_for_subresource_update(self, kind: Kind, old: Message, incoming: Message,
                                       subresource: str) -> Message:
        """The stored object with what `subresource` may change taken from `incoming`.

        The status subresource changes status and nothing else.
        """
        updated = kind.message()
        updated.CopyFrom(old)
        updated.ClearField("status")
        updated.status.CopyFrom(incoming.status)  # type: ignore[attr-defined]
        return updated

    def default(self, obj: Message) -> None:
        """Fill unset fields (defaults.py); never overrides what the client wrote."""
        if self._defaulter is not None:
            self._defaulter(obj)

    # ------------------------------------------------------------ validation

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        """The kind's own checks (validation/<group>.py); `old` is the stored object on update."""
        return self._validator(obj, old) if self._validator is not None else []

    def validate(self, kind: Kind, obj: Message) -> Errors:
        """What is wrong with a new object; defaults applied and name generated already."""
        return validate_object_meta(kind, object_meta(obj), name_rule=self.name_rule) + self.validate_fields(obj, None)

    def validate_update(self, kind: Kind, new: Message, old: Message) -> Errors:
        errors = validate_object_meta(kind, object_meta(new), name_rule=self.name_rule)
        errors += validate_object_meta_update(object_meta(new), object_meta(old))
        return errors + self.validate_fields(new, old)

    def validate_status_update(self, kind: Kind, new: Message, old: Message) -> Errors:
        """A subresource write is checked as a whole object, as on update."""
        return self.validate_update(kind, new, old)

    # ------------------------------------------------------------ graceful deletion

    def begin_graceful_delete(self, obj: Message, grace_period: int | None) -> bool:
        """Mark a deleted object terminating if the kind makes it wait; True means it waits.

        False leaves the decision to the generic rule: finalizers hold any object.
        """
        return False

    def held(self, obj: Message) -> bool:
        """Whether a terminating object without finalizers must still stay."""
        return False

    # ------------------------------------------------------------ storage hooks

    @asynccontextmanager
    async def allocations(self, ctx: StoreContext, new: Message, old: Message | None) -> AsyncIterator[None]:
        """Held around the write of `new` (replacing `old` on update): take what it needs, give back on failure."""
        yield

    async def after_write(self, ctx: StoreContext, obj: Message) -> None:
        """The object was created or updated."""

    async def after_delete(self, ctx: StoreContext, obj: Message) -> None:
        """The object is gone from storage."""


def spec_bytes(obj: Message) -> bytes:
    """Everything but metadata and status, serialised: a change here bumps metadata.generation."""
    copy = type(obj)()
    copy.CopyFrom(obj)
    copy.ClearField("metadata")
    if "status" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("status")
    return copy.SerializeToString(deterministic=True)
