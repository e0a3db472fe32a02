"""OpenAPI schemas of the API's messages, generated from their descriptors: `components.schemas`.

Kubernetes publishes one schema per Go type, named by its Go package
(`io.k8s.api.apps.v1.Deployment`, `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`).
Flotilla's types are .proto messages in one protobuf package, so a message's name is
found from the kinds that use it: a message of apps.proto reached from Deployment
is apps/v1's; one of autoscaling.proto reached from the `scale` subresource's
Scale is autoscaling/v1's even though the file's kind is autoscaling/v2's; all of
meta.proto is meta/v1's.

A field's schema follows from its protobuf type and Flotilla's field options, the
same options proto/manifest.py and proto/wire.py read: `(quantities)` is a Quantity,
`(int_or_string)` an IntOrString, `(duration)` a string; a Timestamp is a Time; a map
is an object with `additionalProperties`; bytes are base64 strings. Descriptions come
from the .proto comments (comments.py), the strategic-merge-patch tags from
proto/patchmeta.py, the required fields from required.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from controlplane.apiserver.openapi import comments, machinery
from controlplane.apiserver.openapi.required import REQUIRED
from proto import options_pb2, patchmeta

# upb's descriptors and the pure-Python ones type differently; both quack the same.
Descriptor = Any
Field = Any
Schema = dict[str, Any]

_META_FILE = "proto/meta.proto"
_TIMESTAMP = "google.protobuf.Timestamp"
# Groups whose types live outside k8s.io/api, by their Go package.
_GO_PACKAGES = {"metrics.k8s.io": "io.k8s.metrics.pkg.apis.metrics"}
_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"format": "byte", "type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_ENUM: {"type": "string"},
    FieldDescriptor.TYPE_DOUBLE: {"format": "double", "type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"format": "float", "type": "number"},
    **{t: {"format": "int32", "type": "integer"} for t in (
        FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32)},
    **{t: {"format": "int64", "type": "integer"} for t in (
        FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)},
}


@dataclass(frozen=True)
class Root:
    """A message the API serves as a kind of its own: named after it, carrying its GVK."""

    message: Descriptor
    api_version: str  # "v1" or "group/version"
    kind: str

    @property
    def gvk(self) -> dict[str, str]:
        group, _, version = self.api_version.rpartition("/")
        return {"group": group, "kind": self.kind, "version": version}


def go_package(api_version: str) -> str:
    """Kubernetes' schema prefix of a group-version: `io.k8s.api.apps.v1`, `io.k8s.api.core.v1`."""
    group, _, version = api_version.rpartition("/")
    if group in _GO_PACKAGES:
        return f"{_GO_PACKAGES[group]}.{version}"
    return f"io.k8s.api.{group.split('.')[0] if group else 'core'}.{version}"


def api_messages(roots: Iterable[Descriptor]) -> list[Descriptor]:
    """Every message of the files the roots and their fields are declared in (not map entries), in order."""
    files: dict[str, Descriptor] = {}
    stack, seen = list(roots), set()
    while stack:
        m = stack.pop(0)
        if m.full_name in seen or m.full_name == _TIMESTAMP:
            continue
        seen.add(m.full_name)
        files.setdefault(m.file.name, m.file)
        stack += [f.message_type for f in m.fields if f.message_type is not None]
    found: list[Descriptor] = []

    def visit(messages: Iterable[Descriptor]) -> None:
        for m in messages:
            if not m.GetOptions().map_entry:
                found.append(m)
                visit(m.nested_types)

    for name in sorted(files):
        visit(files[name].message_types_by_name.values())
    return found


def _is_map(fd: Field) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


class Catalog:
    """Every API message's schema name and schema, computed once at construction."""

    def __init__(self, roots: Iterable[Root]) -> None:
        self.roots = list(roots)
        self.messages = api_messages(r.message for r in self.roots)
        self.names: dict[str, str] = {}  # message full name → schema name
        self._name_messages()
        self.schemas: dict[str, Schema] = machinery.schemas()
        for m in self.messages:
            self.schemas[self.names[m.full_name]] = self._message_schema(m)

    # ---------------------------------------------------------------- names

    def _name_messages(self) -> None:
        package: dict[str, str] = {}  # message full name → Go package
        file_default: dict[str, str] = {}  # file → the Go package of its first kind
        for m in self.messages:
            if m.file.name == _META_FILE:
                package[m.full_name] = machinery.META
        # A kind claims the messages of its own file that it reaches and nobody claimed first.
        for root in self.roots:
            pkg = go_package(root.api_version)
            file_default.setdefault(root.message.file.name, pkg)
            stack, seen = [root.message], set()
            while stack:
                m = stack.pop()
                if m.full_name in seen or m.file.name != root.message.file.name:
                    continue
                seen.add(m.full_name)
                package.setdefault(m.full_name, pkg)
                stack += [f.message_type for f in m.fields if f.message_type is not None]
        for m in self.messages:
            stem = PurePosixPath(m.file.name).stem
            pkg = package.get(m.full_name) or file_default.get(m.file.name) or f"io.k8s.api.{stem}.v1"
            self.names[m.full_name] = f"{pkg}.{m.full_name.rpartition('.')[2]}"

    def name(self, message: Descriptor) -> str:
        return self.names[message.full_name]

    # ---------------------------------------------------------------- schemas

    def _message_schema(self, m: Descriptor) -> Schema:
        schema: Schema = {}
        if text := comments.message(m.full_name):
            schema["description"] = text
        properties = {fd.json_name: self._property(m, fd) for fd in sorted(m.fields, key=lambda f: f.json_name)}
        if properties:
            schema["properties"] = properties
        required = [f for f in REQUIRED.get(m.name, ()) if f in properties]
        if required:
            schema["required"] = required
        schema["type"] = "object"
        gvks = [root.gvk for root in self.roots if root.message.full_name == m.full_name]
        if gvks:
            schema["x-kubernetes-group-version-kind"] = gvks
        return schema

    def _property(self, m: Descriptor, fd: Field) -> Schema:
        description = comments.field(m.full_name, fd.name) or self._conventional(m, fd)
        if _is_map(fd):
            value = self._value(fd.message_type.fields_by_name["value"], quantity=self._quantity(fd))
            schema: Schema = {"additionalProperties": value, "type": "object"}
        elif fd.is_repeated:
            schema = {"items": self._value(fd), "type": "array"}
        else:
            schema = self._value(fd)
        extensions = patchmeta.openapi_extensions(m, fd.name)
        if "$ref" in schema and (description or extensions):
            schema = {"allOf": [schema]}  # in OpenAPI 3.0 nothing may stand beside a $ref
        if description:
            schema["description"] = description
        schema.update(extensions)
        return dict(sorted(schema.items()))

    def _value(self, fd: Field, quantity: bool = False) -> Schema:
        """The schema of one value of a field (an element, for a list; a value, for a map)."""
        options = fd.GetOptions()
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name == _TIMESTAMP:
                return machinery.ref(machinery.TIME)
            return machinery.ref(self.names[fd.message_type.full_name])
        if quantity or self._quantity(fd):
            return machinery.ref(machinery.QUANTITY)
        if options.Extensions[options_pb2.int_or_string]:
            return machinery.ref(machinery.INT_OR_STRING)
        return dict(_SCALARS[fd.type])

    @staticmethod
    def _quantity(fd: Field) -> bool:
        return bool(fd.GetOptions().Extensions[options_pb2.quantities])

    def _conventional(self, m: Descriptor, fd: Field) -> str:
        """Kubernetes' standard words for the fields every kind has, where the .proto says nothing."""
        kind = next((r.kind for r in self.roots if r.message.full_name == m.full_name), "")
        if fd.json_name == "apiVersion" and fd.number > 10000:
            return machinery.API_VERSION
        if fd.json_name == "kind" and fd.number > 10000:
            return machinery.KIND
        if not kind:
            return ""
        return {
            "metadata": machinery.OBJECT_META,
            "spec": f"The desired state of the {kind}, as its owner writes it.",
            "status": f"The most recently observed state of the {kind}, written by the system. Read-only.",
        }.get(fd.json_name, "")

    # ---------------------------------------------------------------- lists

    def list_schema(self, root: Root) -> tuple[str, Schema]:
        """The `<Kind>List` a list request returns (no .proto message: the HTTP layer builds it)."""
        item = self.name(root.message)
        schema: Schema = {
            "description": f"A list of {root.kind} objects.",
            "properties": {
                "apiVersion": {"description": machinery.API_VERSION, "type": "string"},
                "items": {"description": f"The {root.kind} objects.", "items": machinery.ref(item), "type": "array"},
                "kind": {"description": machinery.KIND, "type": "string"},
                "metadata": {"allOf": [machinery.ref(machinery.LIST_META)], "description": machinery.LIST_METADATA},
            },
            "required": ["items"],
            "type": "object",
            "x-kubernetes-group-version-kind": [{**root.gvk, "kind": f"{root.kind}List"}],
        }
        return f"{item}List", schema
