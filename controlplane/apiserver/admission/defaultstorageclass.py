"""DefaultStorageClass and PersistentVolumeClaimResize: the StorageClass rules of a claim's writes.

DefaultStorageClass (Kubernetes' plugin of that name): a claim created
without `storageClassName` (unset, not "": "" asks for volumes without a
class) is given the default class — the one annotated
`storageclass.kubernetes.io/is-default-class: "true"`; with several, the
newest, as Kubernetes picks since 1.28. With none, the claim stays without a
class, and the PV controller gives it one if a default appears later.

PersistentVolumeClaimResize: a bound claim's `requests.storage` may only grow
if its class says `allowVolumeExpansion: true` (validation already refuses
shrinking and any other spec change).

Both read StorageClasses from a cache the registry keeps current with a watch (classcache.py).
"""

from __future__ import annotations

from controlplane.apiserver.admission.classcache import ClassCache
from controlplane.apiserver.admission.interface import CREATE, UPDATE, Request
from controlplane.apiserver.validation.storage import storage_request
from proto import core_pb2, kinds, storage_pb2
from proto.errors import Forbidden
from proto.wellknown import ANNOTATION_DEFAULT_STORAGE_CLASS

NAME = "DefaultStorageClass"
RESIZE_NAME = "PersistentVolumeClaimResize"


class StorageClasses(ClassCache[storage_pb2.StorageClass]):
    """The StorageClass cache both plugins share."""

    policy_kind = kinds.resolve("storageclasses")
    annotation = ANNOTATION_DEFAULT_STORAGE_CLASS


class DefaultStorageClass(StorageClasses):
    """A mutating plugin: claims, on create."""

    NAME = NAME

    def admit(self, request: Request) -> None:
        if request.operation != CREATE or request.subresource or not isinstance(
                request.obj, core_pb2.PersistentVolumeClaim):
            return
        pvc = request.obj
        if pvc.spec.HasField("storage_class_name") or "volume.beta.kubernetes.io/storage-class" in \
                pvc.metadata.annotations:
            return
        found = self.default()
        if found is not None:
            pvc.spec.storage_class_name = found.metadata.name


class PersistentVolumeClaimResize(StorageClasses):
    """Refuses growing a claim whose class does not allow expansion (on update)."""

    NAME = RESIZE_NAME

    def admit(self, request: Request) -> None:
        if request.operation != UPDATE or request.subresource or not isinstance(
                request.obj, core_pb2.PersistentVolumeClaim) or not isinstance(
                request.old, core_pb2.PersistentVolumeClaim):
            return
        new, old = request.obj, request.old
        before, after = storage_request(old), storage_request(new)
        if before is None or after is None or after <= before:
            return
        class_name = new.spec.storage_class_name
        sc = self.classes.get(class_name)
        if not class_name or class_name != old.spec.storage_class_name or sc is None or not (
                sc.HasField("allow_volume_expansion") and sc.allow_volume_expansion):
            raise Forbidden(f'persistentvolumeclaims "{new.metadata.name}" is forbidden: only dynamically '
                            "provisioned pvc can be resized and the storageclass that provisions the pvc must "
                            "support resize")
