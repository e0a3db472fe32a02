"""The meta/v1 shapes the HTTP API speaks that are no .proto message: lists, Status, patches, watch events.

Every kind's schema is generated from its descriptor (schemas.py). What is left is
Kubernetes' API machinery, which Flotilla's HTTP layer writes directly as JSON and
which every group-version document refers to: the scalar wrappers (Time, Quantity,
IntOrString), ListMeta, Status, the Patch body, the WatchEvent frame, and a
DeleteOptions for as long as meta.proto has none. Named as Kubernetes names them, so
clients that look a schema up by name (kubectl, generated clients) find it.
"""

from __future__ import annotations

from typing import Any

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
TIME = f"{META}.Time"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
LIST_META = f"{META}.ListMeta"
STATUS = f"{META}.Status"
DELETE_OPTIONS = f"{META}.DeleteOptions"
PATCH = f"{META}.Patch"
WATCH_EVENT = f"{META}.WatchEvent"

API_VERSION = ("APIVersion is the versioned schema of this representation of an object, \"v1\" or "
               "\"group/version\". The server refuses versions it does not serve.")
KIND = ("Kind is the REST resource this object represents, in CamelCase. Servers may infer it from the "
        "endpoint the client submits to. Cannot be updated.")
OBJECT_META = "Standard object metadata: name, namespace, labels, annotations and what the system records."
LIST_METADATA = "Standard list metadata: the list's resourceVersion and the continue token of a chunked list."


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _string(description: str) -> dict[str, Any]:
    return {"description": description, "type": "string"}


def _integer(description: str, fmt: str = "int32") -> dict[str, Any]:
    return {"description": description, "format": fmt, "type": "integer"}


def _described(name: str, description: str) -> dict[str, Any]:
    """A reference with its own description (a bare $ref may have no siblings in OpenAPI 3.0)."""
    return {"allOf": [ref(name)], "description": description}


def schemas() -> dict[str, dict[str, Any]]:
    """The machinery's schemas by name; a .proto message of the same name replaces one."""
    return {
        TIME: {"description": "A timestamp in RFC 3339 form (\"2024-05-01T12:00:00Z\"), to the second.",
               "format": "date-time", "type": "string"},
        QUANTITY: {
            "description": ("A fixed-point amount with a unit suffix: \"250m\" (milli), \"64Mi\" (binary), "
                            "\"1G\" (decimal), \"2\". YAML numbers are accepted and kept as written."),
            "type": "string"},
        INT_OR_STRING: {"description": "An integer or a string: a port number or a port name, a count or a "
                                       "percentage (\"25%\").",
                        "format": "int-or-string", "type": "string"},
        LIST_META: {
            "description": "Metadata of a list of objects.",
            "properties": {
                "continue": _string("Set when more results are available: pass it back as `continue` to read "
                                    "the next chunk from the same snapshot."),
                "remainingItemCount": _integer("How many items a chunked list has left, when known.", "int64"),
                "resourceVersion": _string("The version of the store the list was read at; watch from here to "
                                           "see every later change."),
                "selfLink": _string("Deprecated; never set."),
            },
            "type": "object",
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.StatusCause": {
            "description": "One reason a request failed, such as an invalid field.",
            "properties": {
                "field": _string("The field that caused the failure, as a path (`spec.containers[0].image`)."),
                "message": _string("What went wrong, for a human."),
                "reason": _string("A machine-readable cause (FieldValueInvalid, FieldValueRequired ...)."),
            },
            "type": "object",
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails": {
            "description": "What a failed request was about, and each cause.",
            "properties": {
                "causes": {"description": "Each reason the request failed.", "type": "array",
                           "items": ref(f"{META}.StatusCause")},
                "group": _string("The group of the resource."),
                "kind": _string("The kind (or resource) of the object."),
                "name": _string("The name of the object."),
                "retryAfterSeconds": _integer("Seconds to wait before retrying, when the server says so."),
                "uid": _string("The UID of the object."),
            },
            "type": "object",
        },
        STATUS: {
            "description": "The result of a request that returns no object, and every error.",
            "properties": {
                "apiVersion": _string(API_VERSION),
                "code": _integer("The HTTP status code."),
                "details": _described(f"{META}.StatusDetails", "More about the failure, where there is more."),
                "kind": _string(KIND),
                "message": _string("What happened, for a human."),
                "metadata": _described(LIST_META, LIST_METADATA),
                "reason": _string("Why, in one CamelCase word (NotFound, AlreadyExists, Conflict, Invalid ...)."),
                "status": _string("\"Success\" or \"Failure\"."),
            },
            "type": "object",
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}],
        },
        f"{META}.Preconditions": {
            "description": "What must still hold when a delete happens; a mismatch is a 409 Conflict.",
            "properties": {"resourceVersion": _string("The object's expected resourceVersion."),
                           "uid": _string("The object's expected UID.")},
            "type": "object",
        },
        DELETE_OPTIONS: {
            "description": "The body of a DELETE.",
            "properties": {
                "apiVersion": _string(API_VERSION),
                "dryRun": {"description": "[\"All\"] runs every stage but the write to storage.", "type": "array",
                           "items": {"type": "string"}},
                "gracePeriodSeconds": _integer("Seconds the object gets to stop; 0 means at once.", "int64"),
                "kind": _string(KIND),
                "orphanDependents": {"description": "Deprecated: use propagationPolicy.", "type": "boolean"},
                "preconditions": _described(f"{META}.Preconditions", "Must hold for the delete to happen."),
                "propagationPolicy": _string("Orphan, Background or Foreground: what becomes of dependents."),
            },
            "type": "object",
        },
        PATCH: {"description": ("A patch body: a JSON patch, a JSON merge patch, a strategic merge patch, or an "
                                "apply configuration, as its Content-Type says."),
                "type": "object"},
        WATCH_EVENT: {
            "description": "One change seen by a watch, one JSON object per line.",
            "properties": {
                "object": {"description": ("The object as it now is (ADDED, MODIFIED), as it last was (DELETED), "
                                           "a Status (ERROR), or only its kind and resourceVersion (BOOKMARK)."),
                           "type": "object"},
                "type": _string("ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."),
            },
            "required": ["type", "object"],
            "type": "object",
        },
    }
