"""The CustomResourceDefinition kind: its defaults and its validation (its strategy: strategies/apiextensions.py).

As apiextensions-apiserver's pkg/registry/customresourcedefinition and
pkg/apis/apiextensions/validation: a CRD names a kind (plural, singular, kind,
listKind, shortNames, categories) in a group that must contain a dot, under the
name `<plural>.<group>`; it serves one or more versions, exactly one of which is
the storage version, each with a *structural* OpenAPI v3 schema (schema.py). A new
CRD gets the finalizer `customresourcecleanup.apiextensions.k8s.io`, so deleting
it first deletes its objects (controller.py), and starts with no status: the
apiserver's own loop (controller.py) accepts its names and establishes it.
"""

from __future__ import annotations

from typing import Any

from controlplane.apiserver.crd import schema
from controlplane.apiserver.validation.field import (
    Errors,
    check_format,
    forbidden,
    invalid,
    one_of,
    required,
)
from controlplane.apiserver.validation.meta import immutable, is_dns1035_label, is_dns1123_subdomain
from proto import apiextensions_pb2, kinds, manifest

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
ESTABLISHED, NAMES_ACCEPTED, TERMINATING = "Established", "NamesAccepted", "Terminating"
SCOPES = ("Cluster", "Namespaced")
COLUMN_TYPES = ("boolean", "date", "integer", "number", "string")
# Groups the kinds table serves: a CRD may not add kinds to them.
BUILT_IN_GROUPS = frozenset(k.group for k in kinds.SERVED)

CRD = apiextensions_pb2.CustomResourceDefinition


def version_schema(version: apiextensions_pb2.CustomResourceDefinitionVersion) -> dict[str, Any]:
    """A version's openAPIV3Schema as the JSON the user wrote ({} when there is none)."""
    if not version.HasField("schema") or not version.schema.HasField("open_apiv3_schema"):
        return {}
    value = manifest.raw_json_value(version.schema.open_apiv3_schema.raw)
    return value if isinstance(value, dict) else {}


def storage_version(crd: CRD) -> str:
    return next((v.name for v in crd.spec.versions if v.storage), "")


def condition(crd: CRD, kind: str) -> apiextensions_pb2.CustomResourceDefinitionCondition | None:
    return next((c for c in crd.status.conditions if c.type == kind), None)


def is_established(crd: CRD) -> bool:
    found = condition(crd, ESTABLISHED)
    return found is not None and found.status == "True"


# ---------------------------------------------------------------- defaults


def default_definition(crd: CRD) -> None:
    names = crd.spec.names
    if names.kind and not names.singular:
        names.singular = names.kind.lower()
    if names.kind and not names.list_kind:
        names.list_kind = f"{names.kind}List"
    if not crd.spec.conversion.strategy:
        crd.spec.conversion.strategy = "None"
    for version in crd.spec.versions:
        # Neither is omitempty in Kubernetes: clients (the Python client's models) expect both, false included.
        version.served = version.served
        version.storage = version.storage
        for column in version.additional_printer_columns:
            if not column.type:
                column.type = "string"


# ---------------------------------------------------------------- validation


def validate_definition(crd: CRD, old: CRD | None) -> Errors:
    errors: Errors = []
    spec, names = crd.spec, crd.spec.names
    if not spec.group:
        errors.append(required("spec.group"))
    else:
        errors += check_format(is_dns1123_subdomain, spec.group, "spec.group")
        if "." not in spec.group:
            errors.append(invalid("spec.group", spec.group, "should be a domain with at least one dot"))
        if spec.group in BUILT_IN_GROUPS:
            errors.append(invalid("spec.group", spec.group, "is a built-in API group"))
    errors += _validate_names(names, "spec.names")
    if names.plural and spec.group and crd.metadata.name != f"{names.plural}.{spec.group}":
        errors.append(invalid("metadata.name", crd.metadata.name, 'must be spec.names.plural+"."+spec.group'))
    errors += one_of(spec.scope, "spec.scope", SCOPES)
    errors += _validate_versions(spec)
    errors += one_of(spec.conversion.strategy, "spec.conversion.strategy", ("None",))
    if spec.preserve_unknown_fields:
        errors.append(invalid("spec.preserveUnknownFields", True, "must be false in order to use defaults in the "
                                                                  "schema"))
    if old is not None:
        errors += immutable(spec.scope, old.spec.scope, "spec.scope")
        errors += immutable(spec.group, old.spec.group, "spec.group")
        # Objects may still be stored at a version ever written: it must stay until a migration says otherwise.
        versions = {v.name for v in spec.versions}
        for i, stored in enumerate(crd.status.stored_versions):
            if stored not in versions:
                errors.append(invalid(f"status.storedVersions[{i}]", stored, "must appear in spec.versions"))
    return errors


def _validate_names(names: apiextensions_pb2.CustomResourceDefinitionNames, path: str) -> Errors:
    errors: Errors = []
    for field, value in (("plural", names.plural), ("singular", names.singular)):
        if not value:
            errors.append(required(f"{path}.{field}"))
        else:
            errors += check_format(is_dns1035_label, value, f"{path}.{field}")
    for field, value in (("kind", names.kind), ("listKind", names.list_kind)):
        if not value:
            errors.append(required(f"{path}.{field}"))
        elif not value[0].isalpha() or not value.replace("_", "").isalnum():
            errors.append(invalid(f"{path}.{field}", value, "must be a valid identifier"))
    if names.kind and names.kind == names.list_kind:
        errors.append(invalid(f"{path}.listKind", names.list_kind, "kind and listKind may not be the same"))
    for i, short in enumerate(names.short_names):
        errors += check_format(is_dns1035_label, short, f"{path}.shortNames[{i}]")
    for i, category in enumerate(names.categories):
        errors += check_format(is_dns1035_label, category, f"{path}.categories[{i}]")
    return errors


def _validate_versions(spec: apiextensions_pb2.CustomResourceDefinitionSpec) -> Errors:
    errors: Errors = []
    if not spec.versions:
        return [required("spec.versions", "must have exactly one version marked as storage version")]
    storage = [v.name for v in spec.versions if v.storage]
    if len(storage) != 1:
        errors.append(invalid("spec.versions", [v.name for v in spec.versions],
                              "must have exactly one version marked as storage version"))
    if not any(v.served for v in spec.versions):
        errors.append(invalid("spec.versions", [v.name for v in spec.versions],
                              "must have at least one version marked as served"))
    seen: set[str] = set()
    for i, version in enumerate(spec.versions):
        path = f"spec.versions[{i}]"
        if not version.name:
            errors.append(required(f"{path}.name"))
        else:
            errors += check_format(is_dns1035_label, version.name, f"{path}.name")
            if version.name in seen:
                errors.append((f"{path}.name", f'Duplicate value: "{version.name}"'))
            seen.add(version.name)
        structural = schema.structural_errors(version_schema(version), f"{path}.schema.openAPIV3Schema")
        errors += structural or schema.default_errors(version_schema(version), f"{path}.schema.openAPIV3Schema")
        for j, column in enumerate(version.additional_printer_columns):
            cpath = f"{path}.additionalPrinterColumns[{j}]"
            if not column.name:
                errors.append(required(f"{cpath}.name"))
            if not column.json_path:
                errors.append(required(f"{cpath}.jsonPath"))
            errors += one_of(column.type, f"{cpath}.type", COLUMN_TYPES)
        scale = version.subresources.scale
        if version.subresources.HasField("scale"):
            if not scale.spec_replicas_path.startswith(".spec."):
                errors.append(invalid(f"{path}.subresources.scale.specReplicasPath", scale.spec_replicas_path,
                                      "should be a json path under .spec"))
            if not scale.status_replicas_path.startswith(".status."):
                errors.append(invalid(f"{path}.subresources.scale.statusReplicasPath", scale.status_replicas_path,
                                      "should be a json path under .status"))
        if version.HasField("deprecation_warning") and not version.deprecated:
            errors.append(forbidden(f"{path}.deprecationWarning", "can only be set for deprecated versions"))
    return errors
