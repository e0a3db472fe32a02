"""The apiserver's OpenAPI documents: `/openapi/v3` (an index and one document per group-version) and `/openapi/v2`.

kubectl needs them: `apply -f` and `create -f` download the group-version's v3
document before anything else (and fail without it unless told --validate=false),
send `fieldValidation=Strict` once it shows the PATCH operation takes that
parameter, find strategic-merge-patch keys in it, and `kubectl explain` prints its
schemas. Generated clients are generated from the same documents.

Everything comes from what the API already declares: the kinds table
(proto/kinds.py) gives the paths (paths.py), the .proto descriptors and their
comments give the schemas (schemas.py, comments.py). Documents are built once, on
first use, and kept with their canonical bytes and hash; the index's
`serverRelativeURL` carries the hash so clients cache a document until it changes.
Callers must not modify what they are given: it is shared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache
from typing import Any

import orjson

from controlplane.apiserver.openapi import machinery, v2
from controlplane.apiserver.openapi.paths import GroupVersion
from controlplane.apiserver.openapi.schemas import Catalog, Root, api_messages
from proto import kinds

Document = dict[str, Any]
_INFO = {"title": "Kubernetes", "version": "unversioned"}


def _roots() -> list[Root]:
    """Every served kind, then the kinds subresources carry that have a message (Scale, Eviction, Binding)."""
    roots = [Root(k.message.DESCRIPTOR, k.api_version, k.kind) for k in kinds.SERVED]
    seen = {(r.api_version, r.kind) for r in roots}
    by_name = {m.full_name: m for m in api_messages(r.message for r in roots)}
    for k in kinds.SERVED:
        package = k.message.DESCRIPTOR.file.package
        for sub in k.subresources:
            key = (sub.api_version or k.api_version, sub.kind or k.kind)
            message = by_name.get(f"{package}.{key[1]}")
            if key not in seen and message is not None:
                seen.add(key)
                roots.append(Root(message, *key))
    return roots


def _group_versions() -> list[str]:
    return list(dict.fromkeys(k.api_version for k in kinds.SERVED))


def _path(api_version: str) -> str:
    """`api/v1`, `apis/apps/v1`: a group-version's key in the v3 index."""
    return f"apis/{api_version}" if "/" in api_version else f"api/{api_version}"


def _referenced(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        target = node.get("$ref")
        if isinstance(target, str):
            out.add(target.rpartition("/")[2])
        for value in node.values():
            _referenced(value, out)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, out)


def _closure(start: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    """The schemas `start` refers to, and theirs, by name, sorted."""
    names: set[str] = set()
    _referenced(start, names)
    todo, done = list(names), set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        found: set[str] = set()
        _referenced(schemas[name], found)
        todo += sorted(found - done)
    return {name: schemas[name] for name in sorted(done)}


class _Documents:
    """Every document, its canonical bytes and their hash; built once."""

    def __init__(self) -> None:
        roots = _roots()
        catalog = Catalog(roots)
        schemas = dict(catalog.schemas)
        names = {(r.api_version, r.kind): catalog.name(r.message) for r in roots}
        for root in roots:
            list_name, list_schema = catalog.list_schema(root)
            schemas[list_name] = list_schema
            names[(root.api_version, f"{root.kind}List")] = list_name
        self.schemas = schemas
        self.names = names
        self.v3: dict[str, Document] = {}
        for api_version in _group_versions():
            builder = GroupVersion(api_version, names)
            for k in kinds.SERVED:
                if k.api_version == api_version:
                    builder.kind(k)
            paths = dict(sorted(builder.paths.items()))
            # Kubernetes' documents carry these whatever the paths say; clients look them up by name.
            always = [machinery.ref(machinery.STATUS), machinery.ref(machinery.DELETE_OPTIONS)]
            self.v3[_path(api_version)] = {
                "components": {"schemas": _closure([paths, always], schemas)},
                "info": _INFO,
                "openapi": "3.0.0",
                "paths": paths,
            }
        self._encode()

    def _encode(self) -> None:
        self.v3_bytes = {path: _canonical(doc) for path, doc in self.v3.items()}
        self.v3_hash = {path: hashlib.sha512(data).hexdigest().upper() for path, data in self.v3_bytes.items()}
        self.index: Document = {"paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={self.v3_hash[path]}"} for path in self.v3}}
        self.v2 = v2.document(list(self.v3.values()), _INFO)
        self.v2_bytes = _canonical(self.v2)

    def extended(self, group_versions: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> _Documents:
        """These documents plus group-versions served besides the kinds table's: api_version -> (paths, schemas)."""
        extended = object.__new__(_Documents)
        extended.schemas, extended.names = self.schemas, self.names
        extended.v3 = dict(self.v3)
        always = [machinery.ref(machinery.STATUS), machinery.ref(machinery.DELETE_OPTIONS)]
        for api_version, (paths, schemas) in group_versions.items():
            path = _path(api_version)
            if path in extended.v3:
                continue  # a built-in group-version is never replaced
            extended.v3[path] = {"components": {"schemas": _closure([paths, always], {**self.schemas, **schemas})},
                                 "info": _INFO, "openapi": "3.0.0", "paths": paths}
        extended._encode()
        return extended


def _canonical(doc: Document) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


@cache
def _built_in() -> _Documents:
    return _Documents()


# Group-versions the API serves besides the kinds table's (custom resources: crd/openapi.py): a generation
# that moves when they change, and their (paths, schemas) given the built-in schema names.
Extension = Callable[[dict[tuple[str, str], str]], dict[str, tuple[dict[str, Any], dict[str, Any]]]]
_extension: tuple[Callable[[], int], Extension] | None = None
_extended: tuple[int, _Documents] | None = None


def register_extension(generation: Callable[[], int], group_versions: Extension) -> None:
    global _extension
    _extension = (generation, group_versions)


def _documents() -> _Documents:
    global _extended
    if _extension is None:
        return _built_in()
    generation, group_versions = _extension
    now = generation()
    if _extended is None or _extended[0] != now:
        base = _built_in()
        _extended = (now, base.extended(group_versions(base.names)))
    return _extended[1]


def v3_index() -> Document:
    """`/openapi/v3`: every group-version's document path and the URL (with hash) to fetch it at."""
    return _documents().index


def v3_document(path: str) -> Document | None:
    """`/openapi/v3/<path>` for "api/v1" or "apis/apps/v1"; None for a group-version not served."""
    return _documents().v3.get(path.strip("/"))


def v3_document_bytes(path: str) -> bytes | None:
    """The document as JSON, exactly the bytes its hash is of (serve these: no encoding per request)."""
    return _documents().v3_bytes.get(path.strip("/"))


def v3_hash(path: str) -> str | None:
    """The document's hash, as the index's `?hash=` has it (an ETag for the response)."""
    return _documents().v3_hash.get(path.strip("/"))


def v2_document() -> Document:
    """`/openapi/v2`: every group-version in one Swagger 2.0 document (`definitions`)."""
    return _documents().v2


def v2_document_bytes() -> bytes:
    return _documents().v2_bytes
