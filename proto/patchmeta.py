"""Strategic-merge-patch metadata: how Kubernetes merges each list and struct of an object.

Kubernetes tags its Go types (`+patchMergeKey=name`, `+patchStrategy=merge`,
`+listType=map`, `+listMapKey=containerPort`) and publishes the tags in OpenAPI as
`x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`,
`x-kubernetes-list-type` and `x-kubernetes-list-map-keys`. Flotilla declares the
same tags as field options in its .proto files (proto/options.proto), and this
module is the one place that reads them: the HTTP layer's strategic merge patch
(`kubectl apply`, `set image`, `rollout restart`, `cordon` ...) and its OpenAPI
documents both ask here.

A list with no merge key is replaced whole by a patch, as in Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf.message import Message

from proto import options_pb2

# upb's descriptors and the pure-Python ones type differently; both quack the same.
Descriptor = Any


@dataclass(frozen=True)
class PatchMeta:
    """One field's tags; empty strings and () where Kubernetes sets none."""

    merge_key: str = ""  # +patchMergeKey: the element field that identifies a list element
    strategy: str = ""  # +patchStrategy: "merge", "replace", "retainKeys" or "merge,retainKeys"
    list_type: str = ""  # +listType: "atomic", "set" or "map"
    list_map_keys: tuple[str, ...] = ()  # +listMapKey, in order, for list_type "map"

    @property
    def merges(self) -> bool:
        """Whether a strategic merge patch merges this list element by element."""
        return "merge" in self.strategy.split(",")

    @property
    def retains_keys(self) -> bool:
        return "retainKeys" in self.strategy.split(",")


NONE = PatchMeta()


def _field(desc: Descriptor, name: str) -> Any:
    """A field by its JSON name (containerPort) or its proto name (container_port)."""
    for fd in desc.fields:
        if name in (fd.json_name, fd.name):
            return fd
    raise KeyError(f"{desc.full_name} has no field {name!r}")


@cache
def _lookup(desc: Descriptor, name: str) -> PatchMeta:
    options = _field(desc, name).GetOptions()
    keys = options.Extensions[options_pb2.list_map_keys]
    return PatchMeta(
        merge_key=options.Extensions[options_pb2.patch_merge_key],
        strategy=options.Extensions[options_pb2.patch_strategy],
        list_type=options.Extensions[options_pb2.list_type],
        list_map_keys=tuple(k for k in keys.split(",") if k),
    )


def lookup(message: Descriptor | Message | type[Message], field: str) -> PatchMeta:
    """The tags of `field` (JSON or proto name) of a message, its class or its descriptor.

    Raises KeyError for a field the message does not have.
    """
    desc: Descriptor = getattr(message, "DESCRIPTOR", message)
    return _lookup(desc, field)


def element(message: Descriptor | Message | type[Message], field: str) -> Descriptor | None:
    """The descriptor of a message field's type (a list's element), None for scalars and maps.

    A patch walks down an object with this beside `lookup`.
    """
    desc = getattr(message, "DESCRIPTOR", message)
    fd = _field(desc, field)
    if fd.message_type is None or fd.message_type.GetOptions().map_entry:
        return None
    return fd.message_type


def openapi_extensions(message: Descriptor | Message | type[Message], field: str) -> dict[str, Any]:
    """The `x-kubernetes-*` keys Kubernetes' OpenAPI puts on this field's schema."""
    meta = lookup(message, field)
    out: dict[str, Any] = {}
    if meta.merge_key:
        out["x-kubernetes-patch-merge-key"] = meta.merge_key
    if meta.strategy:
        out["x-kubernetes-patch-strategy"] = meta.strategy
    if meta.list_type:
        out["x-kubernetes-list-type"] = meta.list_type
    if meta.list_map_keys:
        out["x-kubernetes-list-map-keys"] = list(meta.list_map_keys)
    return out
