"""Validation of storage: PersistentVolume, PersistentVolumeClaim and StorageClass, in Kubernetes' words.

A volume has a size (`capacity.storage`, nothing else), at least one access
mode, exactly one source (hostPath, local or nfs here) and, for a local
volume, the node affinity that says where it is; once created its source
cannot change. A claim asks for `resources.requests.storage` with at least one
access mode; once created its spec is frozen except what the binder writes
(volumeName, once) and, on a bound claim, a larger request (expansion, which
its class must allow — checked by the strategy, which can read the class).
A StorageClass names its provisioner, and its provisioner, parameters,
reclaim policy and binding mode never change: volumes were made from them.

Messages are those of Kubernetes' pkg/apis/core/validation and
pkg/apis/storage/validation, so what kubectl prints can be searched for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from controlplane.apiserver.validation.field import (
    Errors,
    check_format,
    forbidden,
    invalid,
    one_of,
    required,
    unsupported,
)
from controlplane.apiserver.validation.meta import (
    immutable,
    is_dns1123_subdomain,
    is_qualified_name,
    validate_label_selector,
)
from controlplane.apiserver.validation.podspec import _node_selector_term
from proto import core_pb2, storage_pb2
from proto.quantity import QuantityError, parse_quantity

# Sorted, as Kubernetes lists its sets in NotSupported messages.
ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
# Recycle (scrub and reuse) is deprecated in Kubernetes and not offered here.
RECLAIM_POLICIES = ("Delete", "Retain")
VOLUME_MODES = ("Block", "Filesystem")
BINDING_MODES = ("Immediate", "WaitForFirstConsumer")
PV_PHASES = ("Available", "Bound", "Failed", "Pending", "Released")
PVC_PHASES = ("Bound", "Lost", "Pending")
PV_SOURCES = ("host_path", "local", "nfs")  # PersistentVolumeSpec fields, in Kubernetes' order
STORAGE = "storage"
MAX_PARAMETERS = 512
MAX_PARAMETERS_BYTES = 256 * 1024


def storage_request(pvc: core_pb2.PersistentVolumeClaim) -> Decimal | None:
    """The claim's requests.storage, or None when missing or unparsable."""
    try:
        return parse_quantity(pvc.spec.resources.requests[STORAGE])
    except (KeyError, QuantityError):
        return None


def capacity_of(pv: core_pb2.PersistentVolume) -> Decimal | None:
    try:
        return parse_quantity(pv.spec.capacity[STORAGE])
    except (KeyError, QuantityError):
        return None


def _positive_quantity(text: str, path: str) -> Errors:
    try:
        value = parse_quantity(text)
    except QuantityError as exc:
        return [invalid(path, text, str(exc))]
    return [] if value > 0 else [invalid(path, text, "must be greater than zero")]


def _access_modes(modes: Iterable[str], path: str, *, empty: str) -> Errors:
    modes = list(modes)
    if not modes:
        return [required(path, empty)]
    errors = [unsupported(path, m, ACCESS_MODES) for m in modes if m not in ACCESS_MODES]
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        errors.append(forbidden(path, "may not use ReadWriteOncePod with other access modes"))
    return errors


def _class_name(name: str, path: str) -> Errors:
    return check_format(is_dns1123_subdomain, name, path) if name else []


def _absolute(value: str, path: str) -> Errors:
    if not value:
        return [required(path)]
    if not value.startswith("/"):
        return [invalid(path, value, "must be an absolute path")]
    if ".." in value.split("/"):
        return [invalid(path, value, "must not contain '..'")]
    return []


# ---------------------------------------------------------------- PersistentVolume


def _volume_source(spec: core_pb2.PersistentVolumeSpec, path: str) -> Errors:
    sources = [s for s in PV_SOURCES if spec.HasField(s)]  # type: ignore[arg-type]
    fields = spec.DESCRIPTOR.fields_by_name
    if not sources:
        return [required(path, "must specify a volume type")]
    errors = [forbidden(f"{path}.{fields[s].json_name}", "may not specify more than 1 volume type")
              for s in sources[1:]]
    source = sources[0]
    if source == "host_path":
        errors += _absolute(spec.host_path.path, f"{path}.hostPath.path")
        errors += one_of(spec.host_path.type, f"{path}.hostPath.type",
                         ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                          "FileOrCreate", "Socket"), optional=True)
    elif source == "local":
        errors += _absolute(spec.local.path, f"{path}.local.path")
    elif source == "nfs":
        if not spec.nfs.server:
            errors.append(required(f"{path}.nfs.server"))
        errors += _absolute(spec.nfs.path, f"{path}.nfs.path")
    if spec.mount_options and source != "nfs":
        errors.append(forbidden(f"{path}.mountOptions", "may not specify mount options for this volume type"))
    return errors


def _node_affinity(spec: core_pb2.PersistentVolumeSpec, path: str) -> Errors:
    if not spec.HasField("node_affinity"):
        return [required(f"{path}.nodeAffinity", "Local volume requires node affinity")] if spec.HasField(
            "local") else []
    affinity = spec.node_affinity
    if not affinity.HasField("required"):
        return [required(f"{path}.nodeAffinity.required", "must specify required node constraints")]
    terms = affinity.required.node_selector_terms
    if not terms:
        return [required(f"{path}.nodeAffinity.required.nodeSelectorTerms",
                         "must have at least one node selector term")]
    errors: Errors = []
    for i, term in enumerate(terms):
        errors += _node_selector_term(term, f"{path}.nodeAffinity.required.nodeSelectorTerms[{i}]")
    return errors


def validate_persistent_volume(pv: core_pb2.PersistentVolume, old: core_pb2.PersistentVolume | None) -> Errors:
    spec, path = pv.spec, "spec"
    errors = _access_modes(spec.access_modes, f"{path}.accessModes", empty="")
    if not spec.capacity:
        errors.append(required(f"{path}.capacity"))
    elif STORAGE not in spec.capacity or len(spec.capacity) > 1:
        errors.append(unsupported(f"{path}.capacity", ",".join(sorted(spec.capacity)), (STORAGE,)))
    else:
        errors += _positive_quantity(spec.capacity[STORAGE], f"{path}.capacity.storage")
    errors += one_of(spec.persistent_volume_reclaim_policy, f"{path}.persistentVolumeReclaimPolicy",
                     RECLAIM_POLICIES, optional=True)
    errors += _class_name(spec.storage_class_name, f"{path}.storageClassName")
    errors += one_of(spec.volume_mode, f"{path}.volumeMode", VOLUME_MODES, optional=True)
    errors += _volume_source(spec, path)
    errors += _node_affinity(spec, path)
    if spec.HasField("claim_ref"):
        if not spec.claim_ref.name:
            errors.append(required(f"{path}.claimRef.name"))
        if not spec.claim_ref.namespace:
            errors.append(required(f"{path}.claimRef.namespace"))
    errors += one_of(pv.status.phase, "status.phase", PV_PHASES, optional=True)
    if old is not None:
        errors += _persistent_volume_update(pv, old)
    return errors


def _source_of(spec: core_pb2.PersistentVolumeSpec) -> tuple[bytes, ...]:
    return tuple(getattr(spec, s).SerializeToString(deterministic=True) if spec.HasField(s) else b"-"  # type: ignore[arg-type]
                 for s in PV_SOURCES)


def _persistent_volume_update(new: core_pb2.PersistentVolume, old: core_pb2.PersistentVolume) -> Errors:
    errors: Errors = []
    if _source_of(new.spec) != _source_of(old.spec):
        errors.append(forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after "
                                                               "creation"))
    errors += immutable(new.spec.volume_mode, old.spec.volume_mode, "volumeMode")
    if old.spec.HasField("node_affinity") and new.spec.node_affinity != old.spec.node_affinity:
        # Kubernetes allows setting it once; changing it would strand pods already placed by it.
        errors.append(invalid("nodeAffinity.required", new.spec.node_affinity.required, "field is immutable"))
    return errors


# ---------------------------------------------------------------- PersistentVolumeClaim


def validate_persistent_volume_claim_spec(spec: core_pb2.PersistentVolumeClaimSpec, path: str) -> Errors:
    """A claim's spec (also a StatefulSet's volumeClaimTemplates')."""
    errors = _access_modes(spec.access_modes, f"{path}.accessModes", empty="at least 1 access mode is required")
    if spec.HasField("selector"):
        errors += validate_label_selector(spec.selector, f"{path}.selector")
    requests: Mapping[str, str] = spec.resources.requests
    if STORAGE not in requests:
        errors.append(required(f"{path}.resources[{STORAGE}]"))
    else:
        errors += _positive_quantity(requests[STORAGE], f"{path}.resources[{STORAGE}]")
    if spec.HasField("storage_class_name"):
        errors += _class_name(spec.storage_class_name, f"{path}.storageClassName")
    errors += one_of(spec.volume_mode, f"{path}.volumeMode", VOLUME_MODES, optional=True)
    return errors


def validate_persistent_volume_claim(pvc: core_pb2.PersistentVolumeClaim,
                                     old: core_pb2.PersistentVolumeClaim | None) -> Errors:
    errors = validate_persistent_volume_claim_spec(pvc.spec, "spec")
    errors += one_of(pvc.status.phase, "status.phase", PVC_PHASES, optional=True)
    if old is not None:
        errors += _persistent_volume_claim_update(pvc, old)
    return errors


def _persistent_volume_claim_update(new: core_pb2.PersistentVolumeClaim,
                                    old: core_pb2.PersistentVolumeClaim) -> Errors:
    """ValidatePersistentVolumeClaimUpdate: the spec is frozen but for what binding and expansion change."""
    errors: Errors = []
    comparable = core_pb2.PersistentVolumeClaimSpec()
    comparable.CopyFrom(new.spec)
    if not old.spec.volume_name:
        comparable.volume_name = old.spec.volume_name  # the binder sets volumeName once
    if not old.spec.HasField("storage_class_name"):
        # A claim created before any default class existed may be given one later (retroactively).
        comparable.ClearField("storage_class_name")
    if new.status.phase == "Bound" and STORAGE in old.spec.resources.requests:
        comparable.resources.requests[STORAGE] = old.spec.resources.requests[STORAGE]
    if comparable != old.spec:
        errors.append(forbidden("spec", "spec is immutable after creation except resources.requests and "
                                        "volumeAttributesClassName for bound claims"))
    before, after = storage_request(old), storage_request(new)
    if before is not None and after is not None and after < before:
        errors.append(forbidden("spec.resources.requests.storage", "field can not be less than previous value"))
    return errors


# ---------------------------------------------------------------- StorageClass


def validate_storage_class(sc: storage_pb2.StorageClass, old: storage_pb2.StorageClass | None) -> Errors:
    errors: Errors = []
    if not sc.provisioner:
        errors.append(required("provisioner"))
    else:
        errors += check_format(is_qualified_name, sc.provisioner.lower(), "provisioner")
    size = sum(len(k) + len(v) for k, v in sc.parameters.items())
    if len(sc.parameters) > MAX_PARAMETERS:
        errors.append(invalid("parameters", len(sc.parameters), f"must have at most {MAX_PARAMETERS} parameters"))
    if size > MAX_PARAMETERS_BYTES:
        errors.append(invalid("parameters", size, f"must have less than {MAX_PARAMETERS_BYTES} bytes"))
    errors += one_of(sc.reclaim_policy, "reclaimPolicy", RECLAIM_POLICIES, optional=True)
    errors += one_of(sc.volume_binding_mode, "volumeBindingMode", BINDING_MODES)
    if old is not None:
        if sc.provisioner != old.provisioner:
            errors.append(forbidden("provisioner", "updates to provisioner are forbidden."))
        if dict(sc.parameters) != dict(old.parameters):
            errors.append(forbidden("parameters", "updates to parameters are forbidden."))
        if sc.reclaim_policy != old.reclaim_policy:
            errors.append(forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden."))
        errors += immutable(sc.volume_binding_mode, old.volume_binding_mode, "volumeBindingMode")
    return errors
