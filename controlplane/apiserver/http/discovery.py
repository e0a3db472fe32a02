"""Discovery: how kubectl and client libraries learn what this apiserver serves.

Before any other request a client asks `GET /api` and `GET /apis`. kubectl 1.32 asks
for aggregated discovery first, with

    Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...

and when it gets one (`aggregated(legacy=True)` for /api, `aggregated(legacy=False)`
for /apis) it needs nothing else. The core must then answer with

    Content-Type: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList

(`AGGREGATED_CONTENT_TYPE`): a plain `application/json` makes kubectl take the body
for the legacy shape and fall back. Without the Accept, the legacy documents are
served: `api_versions()` (/api), `api_group_list()` (/apis), then one
`api_resource_list(group, version)` per group version (/api/v1, /apis/apps/v1).

Every document is a pure function of proto/kinds.py (names, verbs, short names,
categories, subresources), computed once at import: serving discovery costs a dict
lookup, however many kinds there are. The dicts are shared between requests, so
callers encode them and never change them. `resolve` maps a URL's group, version and
plural back to the kind, for the HTTP router.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from proto import kinds
from proto.kinds import Kind, Subresource

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_API_VERSION = "apidiscovery.k8s.io/v2"


def storage_version_hash(kind: Kind) -> str:
    """Kubernetes' hash of the version objects are stored in (first 8 bytes of sha256("group/version/Kind")).

    Clients use a change of it to notice that stored objects need migrating.
    """
    digest = hashlib.sha256(f"{kind.group}/{kind.version}/{kind.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode("ascii")


def _group_versions() -> dict[str, list[str]]:
    """group -> served versions, groups in Kubernetes' priority order.

    The order decides which group wins when two serve the same plural (`pods` is core,
    not metrics.k8s.io): built-in groups first, in the table's order, and metrics.k8s.io
    last, where an aggregated API server's group would come.
    """
    found: dict[str, list[str]] = {}
    for kind in sorted(kinds.SERVED, key=lambda k: k.in_memory):  # stable: the table's order otherwise
        versions = found.setdefault(kind.group, [])
        if kind.version not in versions:
            versions.append(kind.version)
    return found


def _kinds_of(group: str, version: str) -> list[Kind]:
    return sorted((k for k in kinds.SERVED if k.group == group and k.version == version),
                  key=lambda k: k.http_resource)


def _gvk(kind: Kind, sub: Subresource | None = None) -> dict[str, str]:
    """The GroupVersionKind a resource (or one of its subresources) answers with."""
    api_version = sub.api_version if sub is not None and sub.api_version else kind.api_version
    group, _, version = api_version.rpartition("/")
    return {"group": group, "version": version, "kind": sub.kind if sub is not None and sub.kind else kind.kind}


# ---------------------------------------------------------------- legacy documents


def _api_resource(kind: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": kind.http_resource, "singularName": kind.singular,
                             "namespaced": kind.namespaced, "kind": kind.kind, "verbs": list(kind.verbs)}
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    if kind in kinds.KINDS and not kind.in_memory:  # only what is stored has a storage version
        entry["storageVersionHash"] = storage_version_hash(kind)
    return entry


def _api_subresource(kind: Kind, sub: Subresource) -> dict[str, Any]:
    # As Kubernetes lists them: group and version only where they differ from the parent's.
    entry: dict[str, Any] = {"name": f"{kind.http_resource}/{sub.name}", "singularName": "",
                             "namespaced": kind.namespaced}
    if sub.api_version:
        gvk = _gvk(kind, sub)
        entry["group"], entry["version"] = gvk["group"], gvk["version"]
    entry["kind"] = sub.kind or kind.kind
    entry["verbs"] = list(sub.verbs)
    return entry


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for kind in _kinds_of(group, version):
        resources.append(_api_resource(kind))
        resources.extend(_api_subresource(kind, sub) for sub in kind.subresources)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


# ---------------------------------------------------------------- aggregated (apidiscovery.k8s.io/v2)


def _resource_discovery(kind: Kind) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": kind.http_resource,
        "responseKind": _gvk(kind),
        "scope": "Namespaced" if kind.namespaced else "Cluster",
        "singularResource": kind.singular,
        "verbs": list(kind.verbs),
    }
    if kind.short_names:
        entry["shortNames"] = list(kind.short_names)
    if kind.categories:
        entry["categories"] = list(kind.categories)
    if kind.subresources:
        # client-go refuses a subresource without responseKind, so every one carries its GVK.
        entry["subresources"] = [{"subresource": sub.name, "responseKind": _gvk(kind, sub), "verbs": list(sub.verbs)}
                                 for sub in kind.subresources]
    return entry


def _group_discovery(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": group, "creationTimestamp": None},
        "versions": [{"version": v, "resources": [_resource_discovery(k) for k in _kinds_of(group, v)],
                      "freshness": "Current"} for v in versions],
    }


def _discovery_list(groups: dict[str, list[str]]) -> dict[str, Any]:
    return {"kind": "APIGroupDiscoveryList", "apiVersion": AGGREGATED_API_VERSION, "metadata": {},
            "items": [_group_discovery(g, vs) for g, vs in groups.items()]}


# ---------------------------------------------------------------- computed once

_GROUPS = _group_versions()
_NAMED_GROUPS = {g: vs for g, vs in _GROUPS.items() if g}
_API_VERSIONS: dict[str, Any] = {"kind": "APIVersions", "versions": _GROUPS.get("", []),
                                 # Which address to use from which network; clients use their kubeconfig's.
                                 "serverAddressByClientCIDRs": []}
_API_GROUP_LIST: dict[str, Any] = {
    "kind": "APIGroupList", "apiVersion": "v1",
    "groups": [{"name": g, "versions": [_group_version(g, v) for v in vs],
                "preferredVersion": _group_version(g, vs[0])} for g, vs in _NAMED_GROUPS.items()],
}
_RESOURCE_LISTS: dict[tuple[str, str], dict[str, Any]] = {
    (g, v): _resource_list(g, v) for g, vs in _GROUPS.items() for v in vs}
_AGGREGATED_LEGACY = _discovery_list({"": _GROUPS.get("", [])})
_AGGREGATED_GROUPS = _discovery_list(_NAMED_GROUPS)
_BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.http_resource): k for k in kinds.SERVED}


def api_versions() -> dict[str, Any]:
    """`GET /api`: the core group's versions (APIVersions)."""
    return _API_VERSIONS


def api_group_list() -> dict[str, Any]:
    """`GET /apis`: every named group with its versions, the preferred first (APIGroupList)."""
    return _API_GROUP_LIST


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """`GET /api/v1` (group "") or `GET /apis/<group>/<version>`: its resources (APIResourceList).

    None when the group version is not served (the core answers 404).
    """
    return _RESOURCE_LISTS.get((group, version))


def aggregated(legacy: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList for `/api` (legacy=True, the core group) or `/apis` (every named group).

    Serve it with Content-Type `AGGREGATED_CONTENT_TYPE`.
    """
    return _AGGREGATED_LEGACY if legacy else _AGGREGATED_GROUPS


def resolve(group: str, version: str, resource: str) -> Kind | None:
    """The kind served at `/apis/<group>/<version>/.../<resource>` (group "" for /api/v1), or None."""
    return _BY_PATH.get((group, version, resource))
