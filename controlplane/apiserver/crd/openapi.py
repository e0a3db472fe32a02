"""OpenAPI of the custom kinds served now: their paths and, as their schemas, the CRD's own.

As apiextensions-apiserver publishes them: each served version is a group-version
document of /openapi/v3 (and part of /openapi/v2) whose object schema is the
version's openAPIV3Schema with apiVersion, kind and metadata (an ObjectMeta)
added, named `<reversed group>.<version>.<Kind>` (`com.example.stable.v1.CronTab`),
beside its `<Kind>List`. The paths are the built-ins' (openapi/paths.py), so
kubectl finds the same operations, parameters and patch types. The openapi
package asks here whenever `SERVED.generation` moves (`register`).
"""

from __future__ import annotations

import copy
from typing import Any

from controlplane.apiserver import openapi
from controlplane.apiserver.crd.served import SERVED, CustomKind
from controlplane.apiserver.openapi import machinery
from controlplane.apiserver.openapi.paths import GroupVersion
from controlplane.apiserver.patch import STRATEGIC_MERGE_PATCH

Schema = dict[str, Any]
OBJECT_META = f"{machinery.META}.ObjectMeta"


def schema_name(kind: CustomKind, suffix: str = "") -> str:
    return ".".join((*reversed(kind.group.split(".")), kind.version, kind.kind + suffix))


def _gvk(kind: CustomKind, suffix: str = "") -> list[dict[str, str]]:
    return [{"group": kind.group, "kind": kind.kind + suffix, "version": kind.version}]


def object_schema(kind: CustomKind) -> Schema:
    schema = copy.deepcopy(kind.schema) or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string", "description": machinery.API_VERSION}
    properties["kind"] = {"type": "string", "description": machinery.KIND}
    properties["metadata"] = machinery.ref(OBJECT_META)
    schema["x-kubernetes-group-version-kind"] = _gvk(kind)
    return schema


def list_schema(kind: CustomKind) -> Schema:
    return {
        "description": f"{kind.list_kind} is a list of {kind.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": machinery.API_VERSION},
            "items": {"type": "array", "items": machinery.ref(schema_name(kind)),
                      "description": f"List of {kind.resource}."},
            "kind": {"type": "string", "description": machinery.KIND},
            "metadata": machinery.ref(machinery.LIST_META),
        },
        "x-kubernetes-group-version-kind": _gvk(kind, "List"),
    }


def group_versions(names: dict[tuple[str, str], str]) -> dict[str, tuple[dict[str, Any], dict[str, Schema]]]:
    """api_version -> (paths, the custom schemas they need), for every served custom kind."""
    found: dict[str, tuple[dict[str, Any], dict[str, Schema]]] = {}
    by_version: dict[str, list[CustomKind]] = {}
    for kind in SERVED.kinds():
        by_version.setdefault(kind.api_version, []).append(kind)
    for api_version, served in by_version.items():
        schemas: dict[str, Schema] = {}
        known = dict(names)
        for kind in served:
            schemas[schema_name(kind)] = object_schema(kind)
            schemas[schema_name(kind, "List")] = list_schema(kind)
            known[(api_version, kind.kind)] = schema_name(kind)
            known[(api_version, f"{kind.kind}List")] = schema_name(kind, "List")
        builder = GroupVersion(api_version, known)
        for kind in served:
            builder.kind(kind)
        for item in builder.paths.values():
            _without_strategic_merge(item)
        found[api_version] = (dict(sorted(builder.paths.items())), schemas)
    return found


def _without_strategic_merge(item: dict[str, Any]) -> None:
    """Custom objects take no strategic merge patch, and kubectl reads that here: a PATCH whose body may be
    one makes `kubectl apply` send one; without it kubectl sends a merge patch, as to Kubernetes."""
    operation = item.get("patch")
    if isinstance(operation, dict):
        content = operation.get("requestBody", {}).get("content", {})
        content.pop(STRATEGIC_MERGE_PATCH, None)


def register() -> None:
    """Have /openapi/v2 and /openapi/v3 include the custom kinds served now."""
    openapi.register_extension(lambda: SERVED.generation, group_versions)
