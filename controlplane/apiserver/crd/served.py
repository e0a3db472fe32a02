"""The custom resources this apiserver serves now: one `CustomKind` per served version of an Established CRD.

The kinds table (proto/kinds.py) is fixed when the apiserver starts; custom kinds
come and go while it runs. The CRD loop (controller.py) calls `SERVED.establish`
once a CRD is Established and `SERVED.remove` when it goes, and everything else
asks here: the HTTP router (`resolve`), discovery and OpenAPI (`kinds`,
`generation` to know when to recompute), and the registry, through the strategy
each CRD registers in `strategies.DYNAMIC` (`CustomResourceStrategy`: the spec and
status split, schema validation, the storage version).

A `CustomKind` is a `Kind` (so the registry, RBAC, admission and audit take it
as any other) whose message is the `CustomResource` envelope and whose etcd keys
carry its group: `/registry/<group>/<plural>/[<namespace>/]<name>`, as in
Kubernetes, so a `pods.example.com` never meets the core's pods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import strategies
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.crd import schema
from controlplane.apiserver.crd.definitions import CRD, version_schema
from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation.field import Errors
from proto import apiextensions_pb2, manifest
from proto.kinds import Kind

CustomResource = apiextensions_pb2.CustomResource


@dataclass(frozen=True)
class Column:
    """One additionalPrinterColumn."""

    name: str
    type: str
    format: str
    description: str
    priority: int
    json_path: str


@dataclass(frozen=True)
class ScalePaths:
    """Where a custom resource keeps what its `scale` subresource shows."""

    spec_replicas: str
    status_replicas: str
    label_selector: str


@dataclass(frozen=True, eq=False)
class CustomKind(Kind):
    """A served version of a custom resource."""

    list_kind: str = ""
    definition: str = ""  # the CRD's name, <plural>.<group>
    storage_version: str = ""
    schema: dict[str, Any] = field(default_factory=dict)
    columns: tuple[Column, ...] = ()
    scale: ScalePaths | None = None
    deprecated: bool = False
    deprecation_warning: str = ""

    @property
    def storage_resource(self) -> str:
        return f"{self.group}/{self.resource}"

    @property
    def storage_api_version(self) -> str:
        return f"{self.group}/{self.storage_version}"


def kinds_of(crd: CRD) -> list[CustomKind]:
    """The CustomKind of each served version of `crd`."""
    spec, names = crd.spec, crd.spec.names
    storage = next((v.name for v in spec.versions if v.storage), "")
    found = []
    for version in spec.versions:
        if not version.served:
            continue
        scale = None
        if version.subresources.HasField("scale"):
            paths = version.subresources.scale
            scale = ScalePaths(paths.spec_replicas_path, paths.status_replicas_path, paths.label_selector_path)
        found.append(CustomKind(
            names.kind, names.plural, names.singular, f"{spec.group}/{version.name}", CustomResource,
            spec.scope == "Namespaced", tuple(names.short_names),
            has_status=version.subresources.HasField("status"),
            categories=tuple(names.categories),
            scalable=scale is not None,
            list_kind=names.list_kind or f"{names.kind}List",
            definition=crd.metadata.name,
            storage_version=storage,
            schema=version_schema(version),
            columns=tuple(Column(c.name, c.type, c.format, c.description, c.priority, c.json_path)
                          for c in version.additional_printer_columns),
            scale=scale,
            deprecated=version.deprecated,
            deprecation_warning=version.deprecation_warning,
        ))
    return found


class CustomResourceStrategy(Strategy):
    """apiextensions-apiserver's customresource strategy, for every version of one CRD."""

    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        assert isinstance(obj, CustomResource)
        kind = SERVED.by_kind(obj.api_version, obj.kind)
        if kind is not None:
            obj.api_version = kind.storage_api_version  # conversion None: stored at the storage version
            if kind.has_status:
                obj.ClearField("status")  # with the status subresource, status is written through it only

    def prepare_for_update(self, kind: Kind, new: Message, old: Message) -> None:
        assert isinstance(new, CustomResource) and isinstance(old, CustomResource)
        if isinstance(kind, CustomKind):
            new.api_version = kind.storage_api_version
        if kind.has_status:
            new.ClearField("status")
            if old.HasField("status"):
                new.status.CopyFrom(old.status)

    def prepare_for_subresource_update(self, kind: Kind, old: Message, incoming: Message,
                                       subresource: str) -> Message:
        """`/status`: the stored object with the incoming status (`/scale` writes as a plain update)."""
        assert isinstance(old, CustomResource) and isinstance(incoming, CustomResource)
        updated = CustomResource()
        updated.CopyFrom(old)
        updated.ClearField("status")
        if incoming.HasField("status"):
            updated.status.CopyFrom(incoming.status)
        return updated

    def validate(self, kind: Kind, obj: Message) -> Errors:
        return super().validate(kind, obj) + _schema_errors(kind, obj)

    def validate_update(self, kind: Kind, new: Message, old: Message) -> Errors:
        return super().validate_update(kind, new, old) + _schema_errors(kind, new)


def _schema_errors(kind: Kind, obj: Message) -> Errors:
    """The object against the schema of the version it was written in."""
    assert isinstance(obj, CustomResource)
    return schema.validate(content_of(obj), kind.schema) if isinstance(kind, CustomKind) else []


def content_of(obj: CustomResource) -> dict[str, Any]:
    """The object's fields besides apiVersion, kind and metadata, status included."""
    content = manifest.raw_json_value(obj.content.raw) if obj.HasField("content") else {}
    data = dict(content) if isinstance(content, dict) else {}
    if obj.HasField("status"):
        data["status"] = manifest.raw_json_value(obj.status.raw)
    return data


class CustomKinds:
    """Every served custom kind, by URL and by (apiVersion, kind)."""

    def __init__(self) -> None:
        self.generation = 0  # bumped on every change: discovery and OpenAPI recompute when it moves
        self._by_definition: dict[str, list[CustomKind]] = {}
        self._by_path: dict[tuple[str, str, str], CustomKind] = {}
        self._by_kind: dict[tuple[str, str], CustomKind] = {}

    def establish(self, crd: CRD) -> None:
        """Serve (or re-serve, after a change) every served version of `crd`."""
        self._drop(crd.metadata.name)
        served = kinds_of(crd)
        self._by_definition[crd.metadata.name] = served
        for kind in served:
            self._by_path[(kind.group, kind.version, kind.resource)] = kind
            self._by_kind[(kind.api_version, kind.kind)] = kind
        strategies.DYNAMIC[(crd.spec.group, crd.spec.names.kind)] = CustomResourceStrategy()
        self.generation += 1

    def remove(self, name: str) -> None:
        if self._drop(name):
            self.generation += 1

    def _drop(self, name: str) -> bool:
        gone = self._by_definition.pop(name, [])
        for kind in gone:
            self._by_path.pop((kind.group, kind.version, kind.resource), None)
            self._by_kind.pop((kind.api_version, kind.kind), None)
            if not any(k.group == kind.group and k.kind == kind.kind for k in self._by_kind.values()):
                strategies.DYNAMIC.pop((kind.group, kind.kind), None)
        return bool(gone)

    def resolve(self, group: str, version: str, plural: str) -> CustomKind | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> CustomKind | None:
        return self._by_kind.get((api_version, kind))

    def kinds(self) -> list[CustomKind]:
        return sorted(self._by_path.values(), key=lambda k: (k.group, k.version, k.resource))

    def storage_kinds(self, name: str) -> CustomKind | None:
        """The storage version's kind of CRD `name` (or any served one): where its objects are listed."""
        served = self._by_definition.get(name, [])
        return next((k for k in served if k.version == k.storage_version), served[0] if served else None)


SERVED = CustomKinds()
