"""Table columns of storage: volumes, claims and storage classes (Kubernetes' printPersistentVolume,
printPersistentVolumeClaim and printStorageClass).

Access modes print in kubectl's short words (RWO, ROX, RWX, RWOP); a volume's
CLAIM is `namespace/name`; a claim shows its volume's capacity and modes only
once bound; a terminating volume or claim says Terminating (its protection
finalizer is holding it); the default StorageClass's name ends in "(default)".
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import age
from proto import core_pb2, storage_pb2
from proto.wellknown import ANNOTATION_DEFAULT_STORAGE_CLASS

UNSET = "<unset>"
# Kubernetes' GetAccessModesAsString, in its order.
_SHORT_MODES = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
                ("ReadWriteOncePod", "RWOP"))
# The beta annotation that named a class before storageClassName existed; kubectl still reads it first.
_BETA_CLASS = "volume.beta.kubernetes.io/storage-class"


def access_modes_text(modes: Iterable[str]) -> str:
    present = set(modes)
    return ",".join(short for mode, short in _SHORT_MODES if mode in present)


def _size(quantities: object) -> str:
    """The storage quantity as written ("0" when missing, as Kubernetes prints an empty Quantity)."""
    return str(quantities.get("storage", "")) or "0"  # type: ignore[attr-defined]


def is_default_class(sc: storage_pb2.StorageClass) -> bool:
    return sc.metadata.annotations.get(ANNOTATION_DEFAULT_STORAGE_CLASS) == "true"


def _persistent_volume_cells(pv: core_pb2.PersistentVolume, o: GenerateOptions) -> list[Cell]:
    spec = pv.spec
    claim = f"{spec.claim_ref.namespace}/{spec.claim_ref.name}" if spec.HasField("claim_ref") else ""
    phase = "Terminating" if pv.metadata.HasField("deletion_timestamp") else pv.status.phase
    storage_class = pv.metadata.annotations.get(_BETA_CLASS, spec.storage_class_name)
    attributes_class = spec.volume_attributes_class_name if spec.HasField("volume_attributes_class_name") else UNSET
    volume_mode = spec.volume_mode if spec.HasField("volume_mode") else UNSET
    return [pv.metadata.name, _size(spec.capacity), access_modes_text(spec.access_modes),
            spec.persistent_volume_reclaim_policy, phase, claim, storage_class, attributes_class, pv.status.reason,
            age(pv, o.now), volume_mode]


PERSISTENT_VOLUME = TableConvertor[core_pb2.PersistentVolume]((
    NAME,
    TableColumnDefinition("Capacity", description="capacity is the description of the persistent volume's "
                                                  "resources and capacity."),
    TableColumnDefinition("Access Modes", description="accessModes contains all ways the volume can be mounted."),
    TableColumnDefinition("Reclaim Policy", description="persistentVolumeReclaimPolicy defines what happens to a "
                                                        "persistent volume when released from its claim."),
    TableColumnDefinition("Status", description="phase indicates if a volume is available, bound to a claim, or "
                                                "released by a claim."),
    TableColumnDefinition("Claim", description="claimRef is part of a bi-directional binding between "
                                               "PersistentVolume and PersistentVolumeClaim."),
    TableColumnDefinition("StorageClass", description="StorageClass of the pv"),
    TableColumnDefinition("VolumeAttributesClass", description="VolumeAttributesClass of the pv"),
    TableColumnDefinition("Reason", description="reason is a brief CamelCase string that describes any failure "
                                                "and is meant for machine parsing and tidy display in the CLI."),
    AGE,
    TableColumnDefinition("VolumeMode", priority=1, description="volumeMode defines if a volume is intended to be "
                                                                "used with a formatted filesystem or to remain in "
                                                                "raw block state."),
), _persistent_volume_cells)


def claim_class(pvc: core_pb2.PersistentVolumeClaim) -> str:
    """GetPersistentVolumeClaimClass: the beta annotation, else spec.storageClassName ("" when unset)."""
    return pvc.metadata.annotations.get(_BETA_CLASS, pvc.spec.storage_class_name)


def _persistent_volume_claim_cells(pvc: core_pb2.PersistentVolumeClaim, o: GenerateOptions) -> list[Cell]:
    spec = pvc.spec
    phase = "Terminating" if pvc.metadata.HasField("deletion_timestamp") else pvc.status.phase
    capacity = modes = ""
    if spec.volume_name:
        capacity, modes = _size(pvc.status.capacity), access_modes_text(pvc.status.access_modes)
    attributes_class = spec.volume_attributes_class_name if spec.HasField("volume_attributes_class_name") else UNSET
    volume_mode = spec.volume_mode if spec.HasField("volume_mode") else UNSET
    return [pvc.metadata.name, phase, spec.volume_name, capacity, modes, claim_class(pvc), attributes_class,
            age(pvc, o.now), volume_mode]


PERSISTENT_VOLUME_CLAIM = TableConvertor[core_pb2.PersistentVolumeClaim]((
    NAME,
    TableColumnDefinition("Status", description="phase represents the current phase of PersistentVolumeClaim."),
    TableColumnDefinition("Volume", description="volumeName is the binding reference to the PersistentVolume "
                                                "backing this claim."),
    TableColumnDefinition("Capacity", description="capacity represents the actual resources of the underlying "
                                                  "volume."),
    TableColumnDefinition("Access Modes", description="accessModes contains the actual access modes the volume "
                                                      "backing the PVC has."),
    TableColumnDefinition("StorageClass", description="StorageClass of the pvc"),
    TableColumnDefinition("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
    AGE,
    TableColumnDefinition("VolumeMode", priority=1, description="volumeMode defines what type of volume is "
                                                                "required by the claim."),
), _persistent_volume_claim_cells)


def _storage_class_cells(sc: storage_pb2.StorageClass, o: GenerateOptions) -> list[Cell]:
    name = f"{sc.metadata.name} (default)" if is_default_class(sc) else sc.metadata.name
    reclaim = sc.reclaim_policy if sc.HasField("reclaim_policy") else "Delete"
    binding = sc.volume_binding_mode if sc.HasField("volume_binding_mode") else "Immediate"
    expansion = "true" if sc.HasField("allow_volume_expansion") and sc.allow_volume_expansion else "false"
    return [name, sc.provisioner, reclaim, binding, expansion, age(sc, o.now)]


STORAGE_CLASS = TableConvertor[storage_pb2.StorageClass]((
    NAME,
    TableColumnDefinition("Provisioner", description="provisioner indicates the type of the provisioner."),
    TableColumnDefinition("ReclaimPolicy", description="reclaimPolicy controls the reclaimPolicy for dynamically "
                                                       "provisioned PersistentVolumes of this storage class."),
    TableColumnDefinition("VolumeBindingMode", description="volumeBindingMode indicates how "
                                                           "PersistentVolumeClaims should be provisioned and bound."),
    TableColumnDefinition("AllowVolumeExpansion", description="allowVolumeExpansion shows whether the storage "
                                                              "class allow volume expand."),
    AGE,
), _storage_class_cells)
