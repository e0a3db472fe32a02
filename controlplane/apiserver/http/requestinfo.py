"""A request path as Kubernetes reads it: RequestInfo (k8s.io/apiserver/pkg/endpoints/request).

Resource requests look like

    /api/v1/namespaces/{namespace}/{resource}/{name}/{subresource}
    /apis/{group}/{version}/namespaces/{namespace}/{resource}/{name}/{subresource}
    /api/v1/{resource}/{name}                      (cluster-scoped, or across namespaces)

and their verb follows from the method, whether a name was given and `?watch`:
GET is get, or list without a name, or watch with `watch=true`; POST create;
PUT update; PATCH patch; DELETE delete, or deletecollection without a name.
`/api/v1/namespaces/{name}` is the Namespace itself, and `.../namespaces/{name}/status`
and `/finalize` its subresources. Everything else (/version, /healthz, /openapi,
/api, /apis/apps) is a non-resource request, whose verb is the lower-cased method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True)
class RequestInfo:
    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""  # "api" or "apis"
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def parse(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    parts = [p for p in path.strip("/").split("/") if p]
    verb = _VERBS.get(method.upper(), method.lower())
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(False, path, method.lower())
    prefix = parts[0]
    if prefix == "api":
        if len(parts) < 3:
            return RequestInfo(False, path, method.lower())
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return RequestInfo(False, path, method.lower())
        group, version, rest = parts[1], parts[2], parts[3:]
    if rest and rest[0] == "watch":  # the deprecated /watch/ prefix
        verb, rest = "watch", rest[1:]
        if not rest:
            return RequestInfo(False, path, method.lower())
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if resource == "namespaces" and namespace and not name:
        name = namespace  # /api/v1/namespaces/{name}[/status]: the Namespace object
    if len(rest) > 3:
        subresource = "/".join(rest[2:])  # e.g. a proxy path: not served, the router answers 404
    if not name:
        if verb == "get":
            verb = "watch" if _truthy(query.get("watch")) else "list"
        elif verb == "delete":
            verb = "deletecollection"
    elif verb == "get" and _truthy(query.get("watch")):
        verb = "watch"  # a watch of one object: `fieldSelector=metadata.name=` is added by the handler
    return RequestInfo(True, path, verb, prefix, group, version, namespace, resource, subresource, name)
