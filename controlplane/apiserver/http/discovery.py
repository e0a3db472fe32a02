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
categories, subresources) and the custom kinds served now (crd/served.py), computed
once per set of kinds (at import, and again when a CRD comes or goes): serving
discovery costs a dict lookup, however many kinds there are. The dicts are shared between requests, so
callers encode them and never change them. `resolve` maps a URL's group, version and
plural back to the kind, for the HTTP router.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from controlplane.apiserver.crd.served import SERVED, CustomResource
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


def _group_versions(served: tuple[Kind, ...]) -> dict[str, list[str]]:
    """group -> served versions, groups in Kubernetes' priority order.

    The order decides which group wins when two serve the same plural (`pods` is core,
    not metrics.k8s.io): built-in groups first, in the table's order, and metrics.k8s.io
    last, where an aggregated API server's group would come.
    """
    found: dict[str, list[str]] = {}
    for kind in sorted(served, key=lambda k: k.in_memory):  # stable: the table's order otherwise
        versions = found.setdefault(kind.group, [])
        if kind.version not in versions:
            versions.append(kind.version)
    for group, versions in found.items():
        if group not in _BUILT_IN_GROUPS:  # a CRD's versions: the most stable and newest first, as Kubernetes
            versions.sort(key=version_priority)
    return found


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order (v10, v2, v1, v11beta2, v10beta3, v3beta1, v12alpha1, foo1): a sort key."""
    match = _KUBE_VERSION.fullmatch(version)
    if match is None:
        return (3, 0, 0, version)
    stability = {"": 0, "beta": 1, "alpha": 2}[match["stability"] or ""]
    return (stability, -int(match["major"]), -int(match["minor"] or 0), "")


def _kinds_of(served: tuple[Kind, ...], group: str, version: str) -> list[Kind]:
    return sorted((k for k in served if k.group == group and k.version == version),
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
    if (kind in kinds.KINDS or kind.message is CustomResource) and not kind.in_memory:  # only what is stored
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


def _resource_list(served: tuple[Kind, ...], group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for kind in _kinds_of(served, group, version):
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


def _group_discovery(served: tuple[Kind, ...], group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": group, "creationTimestamp": None},
        "versions": [{"version": v, "resources": [_resource_discovery(k) for k in _kinds_of(served, group, v)],
                      "freshness": "Current"} for v in versions],
    }


def _discovery_list(served: tuple[Kind, ...], groups: dict[str, list[str]]) -> dict[str, Any]:
    return {"kind": "APIGroupDiscoveryList", "apiVersion": AGGREGATED_API_VERSION, "metadata": {},
            "items": [_group_discovery(served, g, vs) for g, vs in groups.items()]}


# ---------------------------------------------------------------- computed once per set of kinds


class _Documents:
    """Every discovery document of one set of served kinds."""

    def __init__(self, served: tuple[Kind, ...]) -> None:
        groups = _group_versions(served)
        named = {g: vs for g, vs in groups.items() if g}
        self.api_versions: dict[str, Any] = {"kind": "APIVersions", "versions": groups.get("", []),
                                             # Which address to use from which network; clients use their kubeconfig's.
                                             "serverAddressByClientCIDRs": []}
        self.api_group_list: dict[str, Any] = {
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{"name": g, "versions": [_group_version(g, v) for v in vs],
                        "preferredVersion": _group_version(g, vs[0])} for g, vs in named.items()],
        }
        self.resource_lists = {(g, v): _resource_list(served, g, v) for g, vs in groups.items() for v in vs}
        self.aggregated_legacy = _discovery_list(served, {"": groups.get("", [])})
        self.aggregated_groups = _discovery_list(served, named)


_KUBE_VERSION = re.compile(r"v(?P<major>[1-9][0-9]*)(?:(?P<stability>alpha|beta)(?P<minor>[1-9][0-9]*))?")
_BUILT_IN_GROUPS = frozenset(k.group for k in kinds.SERVED)
_BUILT_IN = _Documents(kinds.SERVED)
_BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.http_resource): k for k in kinds.SERVED}
_with_custom: tuple[int, _Documents] = (0, _BUILT_IN)


def _documents() -> _Documents:
    """The documents of the built-in kinds and the custom kinds served now (recomputed when those change)."""
    global _with_custom
    generation, documents = _with_custom
    if generation != SERVED.generation:
        documents = _Documents(kinds.SERVED + tuple(SERVED.kinds())) if SERVED.kinds() else _BUILT_IN
        _with_custom = (SERVED.generation, documents)
    return documents


def api_versions() -> dict[str, Any]:
    """`GET /api`: the core group's versions (APIVersions)."""
    return _documents().api_versions


def api_group_list() -> dict[str, Any]:
    """`GET /apis`: every named group with its versions, the preferred first (APIGroupList)."""
    return _documents().api_group_list


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """`GET /api/v1` (group "") or `GET /apis/<group>/<version>`: its resources (APIResourceList).

    None when the group version is not served (the core answers 404).
    """
    return _documents().resource_lists.get((group, version))


def aggregated(legacy: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList for `/api` (legacy=True, the core group) or `/apis` (every named group).

    Serve it with Content-Type `AGGREGATED_CONTENT_TYPE`.
    """
    documents = _documents()
    return documents.aggregated_legacy if legacy else documents.aggregated_groups


def resolve(group: str, version: str, resource: str) -> Kind | None:
    """The kind served at `/apis/<group>/<version>/.../<resource>` (group "" for /api/v1), or None.

    Built-in kinds first; then the custom kinds served now (crd/served.py), so a CRD never shadows a built-in.
    """
    return _BY_PATH.get((group, version, resource)) or SERVED.resolve(group, version, resource)
