"""apiextensions.k8s.io/v1: the CustomResourceDefinition strategy (pkg/registry/customresourcedefinition).

A new CRD gets the finalizer `customresourcecleanup.apiextensions.k8s.io`, so
deleting it first deletes its objects, and starts with no status: the
apiserver's own loop (crd/controller.py) accepts its names and establishes it.
Its status.storedVersions only grows: a version ever written stays listed.
Defaults and validation: crd/definitions.py.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.crd.definitions import (
    CLEANUP_FINALIZER,
    CRD,
    default_definition,
    storage_version,
    validate_definition,
)
from controlplane.apiserver.strategies.base import Strategy
from proto.kinds import Kind


class CustomResourceDefinitionStrategy(Strategy):
    def __init__(self) -> None:
        super().__init__(defaulter=default_definition, validator=validate_definition)

    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        assert isinstance(obj, CRD)
        obj.ClearField("status")
        if CLEANUP_FINALIZER not in obj.metadata.finalizers:
            obj.metadata.finalizers.append(CLEANUP_FINALIZER)

    def prepare_for_update(self, kind: Kind, new: Message, old: Message) -> None:
        super().prepare_for_update(kind, new, old)
        assert isinstance(new, CRD)
        _record_storage_version(new)

    def prepare_for_subresource_update(self, kind: Kind, old: Message, incoming: Message,
                                       subresource: str) -> Message:
        updated = super().prepare_for_subresource_update(kind, old, incoming, subresource)
        assert isinstance(updated, CRD)
        _record_storage_version(updated)
        return updated


def _record_storage_version(crd: CRD) -> None:
    version = storage_version(crd)
    if version and version not in crd.status.stored_versions:
        crd.status.stored_versions.append(version)
