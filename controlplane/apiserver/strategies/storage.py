"""Strategies of storage: PersistentVolume, PersistentVolumeClaim (core/v1) and StorageClass (storage.k8s.io/v1).

As Kubernetes' pkg/registry/core/persistentvolume{,claim}/strategy.go, a new
volume or claim starts with an empty status (the binder writes its phase; the
defaults say Pending until then), and a new one carries its protection
finalizer at once — Kubernetes' StorageObjectInUseProtection admission —
so deleting a claim a pod still uses, or a volume still bound, only marks it
terminating: the pvc-protection and pv-protection controllers
(controlplane/controllers/pvprotection.py) remove the finalizer once nothing
uses it. A StorageClass has no status and nothing of its own beyond
validation and defaults.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import Strategy, object_meta
from controlplane.apiserver.validation import storage as validation
from controlplane.apiserver.validation.field import Errors
from proto.wellknown import FINALIZER_PV_PROTECTION, FINALIZER_PVC_PROTECTION


def _protect(obj: Message, finalizer: str) -> None:
    finalizers = object_meta(obj).finalizers
    if finalizer not in finalizers:
        finalizers.append(finalizer)


class PersistentVolumeStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        obj.ClearField("status")
        _protect(obj, FINALIZER_PV_PROTECTION)

    def default(self, obj: Message) -> None:
        defaults.default_persistent_volume(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_persistent_volume(obj, old)  # type: ignore[arg-type]


class PersistentVolumeClaimStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        obj.ClearField("status")
        _protect(obj, FINALIZER_PVC_PROTECTION)

    def default(self, obj: Message) -> None:
        defaults.default_persistent_volume_claim(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_persistent_volume_claim(obj, old)  # type: ignore[arg-type]


STORAGE_CLASS = Strategy(defaulter=defaults.default_storage_class, validator=validation.validate_storage_class)
