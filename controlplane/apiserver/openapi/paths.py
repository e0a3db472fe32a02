"""The `paths` of a group-version's OpenAPI document: every URL, verb and subresource the API serves.

Read from the kinds table (proto/kinds.py): each kind's verbs, scope and
subresources become the operations Kubernetes publishes for them, each tagged with
`x-kubernetes-action` and `x-kubernetes-group-version-kind`. Clients read more
from these than documentation: kubectl sends `fieldValidation=Strict` (and leaves
validation to the server) only when the PATCH operation of the object's GVK lists a
`fieldValidation` query parameter, and `kubectl explain` finds a resource's kind
through the GVK of its operations.
"""

from __future__ import annotations

from typing import Any

from controlplane.apiserver.openapi import machinery
from proto import kinds

Operation = dict[str, Any]
PathItem = dict[str, Any]

CONTENT_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
WATCH_CONTENT_TYPES = (*CONTENT_TYPES, "application/json;stream=watch",
                       "application/vnd.kubernetes.protobuf;stream=watch")
PATCH_CONTENT_TYPES = ("application/apply-patch+yaml", "application/json-patch+json",
                       "application/merge-patch+json", "application/strategic-merge-patch+json")


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"description": description, "in": "query", "name": name, "schema": {"type": kind, "uniqueItems": True}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "in": "path", "name": name, "required": True,
            "schema": {"type": "string", "uniqueItems": True}}


PRETTY = _query("pretty", "string", "If 'true', the output is pretty printed.")
DRY_RUN = _query("dryRun", "string", "\"All\" runs every stage of the request but the write to storage.")
FIELD_MANAGER = _query("fieldManager", "string",
                       "The name of the actor making the change, recorded in managedFields; required for "
                       "apply patches.")
FIELD_VALIDATION = _query("fieldValidation", "string",
                          "What to do with unknown or duplicate fields in the body: Ignore drops them, Warn "
                          "answers with a warning per field, Strict refuses the request.")
FORCE = _query("force", "boolean", "For apply patches: take over fields other managers own instead of "
                                   "failing with a conflict. Must be unset for other patches.")
LIST = (
    _query("allowWatchBookmarks", "boolean", "Ask a watch for BOOKMARK events, which carry only a "
                                             "resourceVersion."),
    _query("continue", "string", "The continue token of the previous chunk of a chunked list."),
    _query("fieldSelector", "string", "Only objects whose fields match, such as `metadata.name=web`."),
    _query("labelSelector", "string", "Only objects whose labels match, such as `app=web,tier!=db`."),
    _query("limit", "integer", "At most this many items; the list's continue token reads the rest."),
    _query("resourceVersion", "string", "Which version of the store to read, or to watch from."),
    _query("resourceVersionMatch", "string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
    _query("sendInitialEvents", "boolean", "Begin a watch with the current objects as ADDED events."),
    _query("timeoutSeconds", "integer", "End the list or watch call after this many seconds."),
    _query("watch", "boolean", "Stream changes (added, modified, deleted) instead of listing."),
)
DELETE = (
    DRY_RUN,
    _query("gracePeriodSeconds", "integer", "Seconds the object gets to stop; 0 means at once."),
    _query("orphanDependents", "boolean", "Deprecated: use propagationPolicy."),
    _query("propagationPolicy", "string", "Orphan, Background or Foreground: what becomes of dependents."),
)
# Query parameters of the subresources that are not objects (what PodLogOptions,
# PodExecOptions, PodAttachOptions and PodPortForwardOptions hold in Kubernetes).
_STREAMS = ("stdin", "stdout", "stderr", "tty")
SUBRESOURCE_QUERY: dict[str, tuple[dict[str, Any], ...]] = {
    "log": (
        _query("container", "string", "The container to read; may be omitted for a pod of one container."),
        _query("follow", "boolean", "Keep streaming as the container writes."),
        _query("insecureSkipTLSVerifyBackend", "boolean", "Do not verify the kubelet's serving certificate."),
        _query("limitBytes", "integer", "Stop after this many bytes."),
        _query("previous", "boolean", "Read the previous, terminated instance of the container."),
        _query("sinceSeconds", "integer", "Only lines newer than this many seconds."),
        _query("tailLines", "integer", "Only this many lines from the end."),
        _query("timestamps", "boolean", "Begin each line with its RFC 3339 timestamp."),
    ),
    "exec": (
        _query("command", "string", "The command to run, one parameter per argument."),
        _query("container", "string", "The container to run in."),
        *(_query(s, "boolean", f"Attach the command's {s}.") for s in _STREAMS),
    ),
    "attach": (
        _query("container", "string", "The container to attach to."),
        *(_query(s, "boolean", f"Attach the container's {s}.") for s in _STREAMS),
    ),
    "portforward": (_query("ports", "integer", "The pod's ports to forward."),),
}
# Subresources read as text rather than as an object.
TEXT_SUBRESOURCES = {"log"}


def _camel(word: str) -> str:
    return word[:1].upper() + word[1:]


def _group_word(group: str) -> str:
    """`Apps`, `RbacAuthorization`, `Core`: the group in operation IDs, as Kubernetes spells it."""
    if not group:
        return "Core"
    return "".join(_camel(part) for part in group.removesuffix(".k8s.io").split("."))


def _content(schema: dict[str, Any], types: tuple[str, ...] = CONTENT_TYPES) -> dict[str, Any]:
    return {t: {"schema": schema} for t in types}


class GroupVersion:
    """Builds the paths of one group-version; `schema_name` names the schema of a (api_version, kind)."""

    def __init__(self, api_version: str, schema_name: dict[tuple[str, str], str]) -> None:
        self.api_version = api_version
        self.group, _, self.version = api_version.rpartition("/")
        self.prefix = f"/apis/{api_version}" if self.group else f"/api/{api_version}"
        self.schema_name = schema_name
        self.tag = f"{self.group.removesuffix('.k8s.io').replace('.', '_') or 'core'}_{self.version}"
        self.paths: dict[str, PathItem] = {}

    def operation(self, verb: str, action: str, what: str, gvk: tuple[str, str], response: dict[str, Any],
                  *, codes: tuple[str, ...] = ("200",), params: tuple[dict[str, Any], ...] = (),
                  body: dict[str, Any] | None = None, body_types: tuple[str, ...] = ("application/json",),
                  response_types: tuple[str, ...] = CONTENT_TYPES) -> Operation:
        api_version, kind = gvk
        group, _, version = api_version.rpartition("/")
        names = {"200": "OK", "201": "Created", "202": "Accepted"}
        op: Operation = {
            "description": what,
            "operationId": verb,
            "responses": {c: {"content": _content(response, response_types), "description": names[c]}
                          for c in codes},
            "tags": [self.tag],
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
        }
        if params:
            op["parameters"] = sorted(params, key=lambda p: p["name"])
        if body is not None:
            op["requestBody"] = {"content": _content(body, body_types), "required": True}
        return op

    def ref(self, api_version: str, kind: str) -> dict[str, Any]:
        return machinery.ref(self.schema_name[(api_version, kind)])

    def add(self, path: str, method: str, op: Operation, params: tuple[dict[str, Any], ...]) -> None:
        item = self.paths.setdefault(path, {"parameters": [*params, PRETTY]})
        item[method] = op

    def kind(self, k: kinds.Kind) -> None:
        """The operations of one kind: its collection, its objects, watches and subresources."""
        verbs, gvk, res = set(k.verbs), (k.api_version, k.kind), k.http_resource
        word = f"{_group_word(self.group)}{_camel(self.version)}{'Namespaced' if k.namespaced else ''}{k.kind}"
        scope = f"/namespaces/{{namespace}}/{res}" if k.namespaced else f"/{res}"
        scope_params = (_path("namespace", "The namespace of the objects."),) if k.namespaced else ()
        name_params = (_path("name", f"The name of the {k.kind}."), *scope_params)
        obj, lst = self.ref(*gvk), machinery.ref(self.schema_name[(k.api_version, f"{k.kind}List")])
        status = machinery.ref(machinery.STATUS)
        writes = (DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION)
        collection, item = self.prefix + scope, f"{self.prefix}{scope}/{{name}}"
        if "list" in verbs:
            self.add(collection, "get", self.operation(
                f"list{word}", "list", f"list or watch objects of kind {k.kind}", gvk, lst, params=LIST,
                response_types=WATCH_CONTENT_TYPES), scope_params)
            if k.namespaced:
                self.add(f"{self.prefix}/{res}", "get", self.operation(
                    f"list{word.replace('Namespaced', '')}ForAllNamespaces", "list",
                    f"list or watch objects of kind {k.kind} in every namespace", gvk, lst, params=LIST,
                    response_types=WATCH_CONTENT_TYPES), ())
        if "create" in verbs:
            self.add(collection, "post", self.operation(
                f"create{word}", "post", f"create a {k.kind}", gvk, obj, codes=("200", "201", "202"),
                params=writes, body=obj), scope_params)
        if "deletecollection" in verbs:
            self.add(collection, "delete", self.operation(
                f"deletecollection{word}", "deletecollection", f"delete a collection of {k.kind}", gvk, status,
                params=(*DELETE, *LIST), body=machinery.ref(machinery.DELETE_OPTIONS)), scope_params)
        if "get" in verbs:
            self.add(item, "get", self.operation(f"read{word}", "get", f"read the specified {k.kind}", gvk, obj),
                     name_params)
        if "update" in verbs:
            self.add(item, "put", self.operation(
                f"replace{word}", "put", f"replace the specified {k.kind}", gvk, obj, codes=("200", "201"),
                params=writes, body=obj), name_params)
        if "patch" in verbs:
            self.add(item, "patch", self.operation(
                f"patch{word}", "patch", f"partially update the specified {k.kind}", gvk, obj,
                codes=("200", "201"), params=(*writes, FORCE), body=machinery.ref(machinery.PATCH),
                body_types=PATCH_CONTENT_TYPES), name_params)
        if "delete" in verbs:
            self.add(item, "delete", self.operation(
                f"delete{word}", "delete", f"delete a {k.kind}", gvk, status, codes=("200", "202"), params=DELETE,
                body=machinery.ref(machinery.DELETE_OPTIONS)), name_params)
        if "watch" in verbs:
            event = machinery.ref(machinery.WATCH_EVENT)
            self.add(f"{self.prefix}/watch{scope}", "get", self.operation(
                f"watch{word}List", "watchlist", f"watch changes to a list of {k.kind}; deprecated: use the "
                "'watch' parameter of a list", gvk, event, params=LIST, response_types=WATCH_CONTENT_TYPES),
                scope_params)
            self.add(f"{self.prefix}/watch{scope}/{{name}}", "get", self.operation(
                f"watch{word}", "watch", f"watch changes to a {k.kind}; deprecated: use the 'watch' parameter "
                "of a list with a field selector on its name", gvk, event, params=LIST,
                response_types=WATCH_CONTENT_TYPES), name_params)
        for sub in k.subresources:
            self.subresource(k, sub, word, item, name_params)

    def subresource(self, k: kinds.Kind, sub: kinds.Subresource, word: str, item: str,
                    name_params: tuple[dict[str, Any], ...]) -> None:
        gvk = (sub.api_version or k.api_version, sub.kind or k.kind)
        path, word = f"{item}/{sub.name}", f"{word}{_camel(sub.name)}"
        query = SUBRESOURCE_QUERY.get(sub.name, ())
        writes = (DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION)
        has_schema = gvk in self.schema_name
        if sub.name in TEXT_SUBRESOURCES:
            self.add(path, "get", self.operation(
                f"read{word}", "get", f"read the {sub.name} of the specified {k.kind}", gvk, {"type": "string"},
                params=query, response_types=("text/plain", "application/json", "application/yaml")), name_params)
            return
        if not has_schema:
            # A stream, not an object (exec, attach, portforward): upgraded to WebSocket or SPDY.
            for verb, method in (("get", "get"), ("create", "post")):
                if verb in sub.verbs:
                    self.add(path, method, self.operation(
                        f"connect{_camel(method)}{word}", "connect", f"connect {method.upper()} requests to "
                        f"{sub.name} of {k.kind}", gvk, {"type": "string"}, params=query,
                        response_types=("*/*",)), name_params)
            return
        obj = self.ref(*gvk)
        what = f"the {sub.name} of the specified {k.kind}"
        if "get" in sub.verbs:
            self.add(path, "get", self.operation(f"read{word}", "get", f"read {what}", gvk, obj), name_params)
        if "update" in sub.verbs:
            self.add(path, "put", self.operation(
                f"replace{word}", "put", f"replace {what}", gvk, obj, codes=("200", "201"), params=writes, body=obj),
                name_params)
        if "patch" in sub.verbs:
            self.add(path, "patch", self.operation(
                f"patch{word}", "patch", f"partially update {what}", gvk, obj, codes=("200", "201"),
                params=(*writes, FORCE), body=machinery.ref(machinery.PATCH), body_types=PATCH_CONTENT_TYPES),
                name_params)
        if "create" in sub.verbs:
            self.add(path, "post", self.operation(
                f"create{word}", "post", f"create {what}", gvk, obj, codes=("200", "201", "202"), params=writes,
                body=obj), name_params)
