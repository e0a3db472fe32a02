"""Requests for custom resources: the HTTP verbs over the same request core as built-ins.

The router (http/app.py) sends here every path whose group, version and plural
name a served custom kind (served.py). Each verb is one `Endpoints` call, so
authorisation (RBAC by group and plural), admission (namespace lifecycle
included), the registry's metadata, finalizer and deletion rules, and audit are
exactly the built-ins'; only the body's encoding differs (codec.py: schema
pruning and defaulting going in, the version's apiVersion coming out).

As Kubernetes serves custom resources:

- PATCH takes JSON patches and merge patches; a strategic merge patch is a 415
  (custom objects carry no patch strategies); server-side apply is the
  built-ins' (fieldmanager.py: owners, conflicts, force), maps granular and
  lists atomic, and every write records its manager in metadata.managedFields;
- `/status` writes change status only, writes of the object leave status alone
  (the strategy, when the version has the status subresource);
- `/scale` is an autoscaling/v1 Scale read from and written to the CRD's
  specReplicasPath, statusReplicasPath and labelSelectorPath;
- Tables come from additionalPrinterColumns (printing.py).
"""

from __future__ import annotations

import builtins
import copy
from typing import Any

import orjson
from aiohttp import web
from google.protobuf.message import Message

from controlplane.apiserver import fieldmanager, patch
from controlplane.apiserver.admission import warning_header
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.crd import codec as crd_codec
from controlplane.apiserver.crd import openapi as crd_openapi
from controlplane.apiserver.crd import printing
from controlplane.apiserver.crd.served import CustomKind, CustomResource, content_of
from controlplane.apiserver.endpoints import Endpoints
from controlplane.apiserver.http import codec, patching, watch
from controlplane.apiserver.http.handlers import MethodNotAllowed, delete_options, dry_run, json_response
from controlplane.apiserver.http.requestinfo import RequestInfo
from controlplane.apiserver.http.status import success_status
from controlplane.apiserver.registry import Event
from proto.errors import ApiError, BadRequest, NotFound, UnsupportedMediaType

_NOT_FOUND = "the server could not find the requested resource"
# What a custom resource's PATCH accepts, in Kubernetes' order (no strategic merge patch).
PATCH_TYPES = (patch.JSON_PATCH, patch.MERGE_PATCH, patch.APPLY_PATCH)


class CustomResourceHandlers:
    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        crd_openapi.register()  # served custom kinds join /openapi/v2 and /openapi/v3 as they come

    async def serve(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind
                    ) -> web.StreamResponse:
        namespace = info.namespace if kind.namespaced else ""
        if (info.namespace and not kind.namespaced) or (info.name and kind.namespaced and not namespace):
            raise NotFound(_NOT_FOUND)
        sub = info.subresource
        if sub and sub not in {s.name for s in kind.subresources}:
            raise NotFound(_NOT_FOUND)
        warnings = [_deprecation(kind)] if kind.deprecated else []
        if sub == "scale":
            return await self.scale(request, user, info, kind, namespace)
        handler = {"get": self.get, "list": self.list, "watch": self.watch, "create": self.create,
                   "update": self.update, "patch": self.patch, "delete": self.delete,
                   "deletecollection": self.delete_collection}.get(info.verb)
        if handler is None or (sub and info.verb not in ("get", "update", "patch")):
            raise MethodNotAllowed(f"the server does not allow this method on the requested resource "
                                   f"({kind.resource})")
        response: web.StreamResponse = await handler(request, user, info, kind, namespace)
        if warnings and not response.prepared:
            for text in warnings:
                response.headers.add("Warning", warning_header(text))
        return response

    # ------------------------------------------------------------------ encoding

    def _render(self, request: web.Request, kind: CustomKind, obj: Message, status: int = 200,
                warnings: builtins.list[str] | None = None) -> web.Response:
        assert isinstance(obj, CustomResource)
        rendering = codec.negotiate(request.headers.get("Accept", ""), request.query.get("includeObject", ""))
        if rendering.table:
            body = codec.dumps(_table(kind, [obj], rendering))
        elif rendering.as_ == codec.AS_PARTIAL:
            body = codec.dumps(codec.partial_object(obj))
        else:
            body = crd_codec.to_json(obj, kind)
        return json_response_bytes(body, status, warnings)

    # ------------------------------------------------------------------ reads

    async def get(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                  namespace: str) -> web.Response:
        obj = await self.endpoints.get(user, kind, namespace, info.name, info.subresource)
        return self._render(request, kind, obj)

    async def list(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                   namespace: str) -> web.Response:
        query = request.query
        limit = query.get("limit", "")
        if limit and not limit.isdigit():
            raise BadRequest(f'limit: invalid value "{limit}": must be an integer')
        page = await self.endpoints.list(
            user, kind, namespace, label_selector=query.get("labelSelector", ""),
            field_selector=query.get("fieldSelector", ""), limit=int(limit or 0),
            continue_token=query.get("continue", ""), resource_version=query.get("resourceVersion", ""))
        objs = [crd_codec.parse(raw) for raw in page.items]
        rendering = codec.negotiate(request.headers.get("Accept", ""), query.get("includeObject", ""))
        metadata: dict[str, Any] = {"resourceVersion": page.resource_version}
        if page.continue_token:
            metadata["continue"] = page.continue_token
        if page.remaining_item_count:
            metadata["remainingItemCount"] = page.remaining_item_count
        if rendering.table:
            data = _table(kind, objs, rendering, page.resource_version)
            data["metadata"].update(metadata)
            return json_response(data)
        if rendering.as_ in (codec.AS_PARTIAL, codec.AS_PARTIAL_LIST):
            return json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                  "metadata": metadata, "items": [codec.partial_object(o) for o in objs]})
        return json_response({"apiVersion": kind.api_version, "kind": kind.list_kind, "metadata": metadata,
                              "items": [crd_codec.to_dict(o, kind) for o in objs]})

    async def watch(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                    namespace: str) -> web.StreamResponse:
        headers_sent = False

        def encode(event: Event, rendering: codec.Rendering) -> bytes:
            nonlocal headers_sent
            if event.type == "BOOKMARK":
                obj: dict[str, Any] = {"kind": kind.kind, "apiVersion": kind.api_version,
                                       "metadata": {"resourceVersion": str(event.revision)}}
            elif rendering.table:
                obj = _table(kind, [crd_codec.parse(event.object)], rendering)
                if headers_sent:
                    obj["columnDefinitions"] = []
                headers_sent = True
            elif rendering.as_ in (codec.AS_PARTIAL, codec.AS_PARTIAL_LIST):
                obj = codec.partial_object(crd_codec.parse(event.object))
            else:
                obj = crd_codec.to_dict(crd_codec.parse(event.object), kind)
            return orjson.dumps({"type": event.type, "object": obj}) + b"\n"
        return await watch.serve_watch(request, self.endpoints, user, kind, namespace, name=info.name,
                                       encode=encode)

    # ------------------------------------------------------------------ writes

    async def _body(self, request: web.Request, kind: CustomKind) -> tuple[CustomResource, builtins.list[str]]:
        data = codec.load(await request.read(), request.headers.get("Content-Type", codec.JSON))
        return crd_codec.decode(kind, data, codec.field_validation(request.query.get("fieldValidation", "")))

    async def create(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                     namespace: str) -> web.Response:
        if info.name:
            raise MethodNotAllowed(f"the server does not allow this method on the requested resource "
                                   f"({kind.resource})")
        manager = patching.field_manager(request.query, request.headers, "CreateOptions")
        obj, warnings = await self._body(request, kind)
        obj = _track(kind, None, obj, manager)
        created = await self.endpoints.create(user, kind, namespace, obj, dry_run=dry_run(request.query))
        return self._render(request, kind, created, 201, warnings)

    async def update(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                     namespace: str) -> web.Response:
        obj, warnings = await self._body(request, kind)
        if obj.metadata.name and obj.metadata.name != info.name:
            raise BadRequest(f"the name of the object ({obj.metadata.name}) does not match the name on the URL "
                             f"({info.name})")
        obj.metadata.name = info.name
        manager = patching.field_manager(request.query, request.headers, "UpdateOptions")

        def put(current: Message | None) -> Message:
            assert isinstance(current, CustomResource)
            new = CustomResource()
            new.CopyFrom(obj)
            if not obj.metadata.resource_version:  # unconditional: whatever is stored now
                new.metadata.resource_version = current.metadata.resource_version
            return _track(kind, current, new, manager, info.subresource)
        updated = await self.endpoints.patch(user, kind, namespace, info.name, put, subresource=info.subresource,
                                             dry_run=dry_run(request.query), verb="update")
        return self._render(request, kind, updated, 200, warnings)

    async def patch(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                    namespace: str) -> web.Response:
        body = await request.read()
        media = patch.media_type(request.headers.get("Content-Type", ""))
        if media not in PATCH_TYPES:
            raise UnsupportedMediaType("the body of the request was in an unknown format - accepted media types "
                                       "include: " + ", ".join(PATCH_TYPES))
        validation = codec.field_validation(request.query.get("fieldValidation", ""))
        applying = media == patch.APPLY_PATCH
        if applying and not request.query.get("fieldManager"):
            raise BadRequest("PATCH /apply requires fieldManager to be set")
        manager = patching.field_manager(request.query, request.headers, "PatchOptions")
        force = request.query.get("force", "").lower() in ("true", "1")
        applied = codec.load(body, media) if applying else None
        warnings: builtins.list[str] = []
        existed = True

        def transform(current: Message | None) -> Message:
            nonlocal existed, warnings
            existed = current is not None
            live = crd_codec.to_dict(current, kind) if isinstance(current, CustomResource) else None
            if applying:
                if not isinstance(applied, dict):
                    raise BadRequest("the applied configuration must be an object")
                # Pruned first, so the manager owns only what can be stored.
                config, warnings = crd_codec.pruned_configuration(kind, copy.deepcopy(applied), validation)
                merged = fieldmanager.apply(kind, live, config, manager, force, subresource=info.subresource)
                obj, _ = crd_codec.decode(kind, merged, codec.IGNORE)
                return obj
            assert isinstance(current, CustomResource) and live is not None
            obj, warnings = crd_codec.decode(kind, patch.apply_patch(kind, live, body, media), validation)
            return _track(kind, current, obj, manager, info.subresource)
        patched = await self.endpoints.patch(user, kind, namespace, info.name, transform,
                                             subresource=info.subresource, dry_run=dry_run(request.query),
                                             create_missing=applying)
        return self._render(request, kind, patched, 200 if existed else 201, warnings)

    async def delete(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                     namespace: str) -> web.Response:
        obj = await self.endpoints.delete(user, kind, namespace, info.name, await delete_options(request))
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.HasField("deletion_timestamp"):
            return self._render(request, kind, obj)  # still there: its finalizers hold it
        return json_response(success_status({"name": meta.name, "group": kind.group, "kind": kind.resource,
                                             "uid": meta.uid}))

    async def delete_collection(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                                namespace: str) -> web.Response:
        deleted = await self.endpoints.delete_collection(
            user, kind, namespace, label_selector=request.query.get("labelSelector", ""),
            field_selector=request.query.get("fieldSelector", ""), options=await delete_options(request))
        return json_response({"apiVersion": kind.api_version, "kind": kind.list_kind, "metadata": {},
                              "items": [crd_codec.to_dict(o, kind) for o in deleted  # type: ignore[arg-type]
                                        ]})

    # ------------------------------------------------------------------ scale

    async def scale(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: CustomKind,
                    namespace: str) -> web.Response:
        if info.verb == "get":
            obj = await self.endpoints.get(user, kind, namespace, info.name, "scale")
            return json_response(_to_scale(kind, obj))
        if info.verb not in ("update", "patch"):
            raise MethodNotAllowed(f"the server does not allow this method on the requested resource "
                                   f"({kind.resource}/scale)")
        body, content_type = await request.read(), request.headers.get("Content-Type", codec.JSON)

        def rescale(current: Message | None) -> Message:
            assert isinstance(current, CustomResource)
            if info.verb == "update":
                wanted = codec.load(body, content_type)
            else:
                if patch.media_type(content_type) not in (patch.JSON_PATCH, patch.MERGE_PATCH):
                    raise UnsupportedMediaType("the body of the request was in an unknown format - accepted media "
                                               "types include: " + ", ".join(PATCH_TYPES[:2]))
                wanted = patch.apply_patch(kind, _to_scale(kind, current), body, content_type)
            replicas = (wanted.get("spec") or {}).get("replicas") if isinstance(wanted, dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise BadRequest(f"spec.replicas: Invalid value: {replicas!r}: must be a non-negative integer")
            data = content_of(current)
            assert kind.scale is not None
            _set_path(data, kind.scale.spec_replicas, replicas)
            new = CustomResource()
            new.CopyFrom(current)
            crd_codec.store(new, kind, data)
            return new
        updated = await self.endpoints.patch(user, kind, namespace, info.name, rescale, subresource="scale",
                                             dry_run=dry_run(request.query), verb=info.verb)
        return json_response(_to_scale(kind, updated))


def json_response_bytes(body: bytes, status: int = 200, warnings: builtins.list[str] | None = None) -> web.Response:
    response = web.Response(status=status, body=body, content_type=codec.JSON)
    for text in warnings or ():
        response.headers.add("Warning", warning_header(text))
    return response


def _deprecation(kind: CustomKind) -> str:
    return kind.deprecation_warning or f"{kind.api_version} {kind.kind} is deprecated"


def _table(kind: CustomKind, objs: builtins.list[CustomResource], rendering: codec.Rendering,
           resource_version: str = "") -> dict[str, Any]:
    data = printing.table(kind, objs, resource_version)
    if rendering.include_object != "None":
        for row, obj in zip(data["rows"], objs, strict=True):
            row["object"] = (codec.partial_object(obj) if rendering.include_object == "Metadata"
                             else crd_codec.to_dict(obj, kind))
    return data


def _track(kind: CustomKind, old: CustomResource | None, new: CustomResource, manager: str,
           subresource: str = "") -> CustomResource:
    """`new` with metadata.managedFields recording what this write (by `manager`) changed, as built-ins'.

    A custom object has no patch strategies: its maps are granular and its lists atomic
    (fieldmanager.py treats what the envelope's descriptor does not declare as untyped).
    """
    tracked = fieldmanager.update(kind, crd_codec.to_dict(old, kind) if old is not None else None,
                                  crd_codec.to_dict(new, kind), manager, subresource=subresource)
    obj, _ = crd_codec.decode(kind, tracked, codec.IGNORE)
    return obj


def _lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.strip(".").split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _to_scale(kind: CustomKind, obj: Message) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a custom object, read through the CRD's paths."""
    assert isinstance(obj, CustomResource) and kind.scale is not None
    data = content_of(obj)
    replicas = _lookup(data, kind.scale.spec_replicas)
    if replicas is None:
        raise ApiError(f"the spec replicas field {kind.scale.spec_replicas!r} does not exist")
    meta = obj.metadata
    scale: dict[str, Any] = {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta.name, "uid": meta.uid, "resourceVersion": meta.resource_version,
                     "creationTimestamp": codec.metadata_dict(obj).get("creationTimestamp")},
        "spec": {"replicas": replicas},
        "status": {"replicas": _lookup(data, kind.scale.status_replicas) or 0},
    }
    if meta.namespace:
        scale["metadata"]["namespace"] = meta.namespace
    selector = _lookup(data, kind.scale.label_selector) if kind.scale.label_selector else None
    if selector:
        scale["status"]["selector"] = selector
    return scale
