"""Resource requests of the HTTP API: one handler per verb, each a thin call into the request core.

The router (app.py) has parsed the path into a RequestInfo and authenticated the
caller; a handler here reads the query and body the way kube-apiserver does,
calls one `Endpoints` method (controlplane/apiserver/endpoints.py: authorise,
admit, registry, audit) and encodes the answer as the Accept header asks
(codec.py). Subresources are views over their object: `status` (the object,
writes keep the spec), `scale` (an autoscaling/v1 Scale, subresources/scale.py),
`binding`, `eviction`, and the node streams (`log`, `exec`, `attach`,
`portforward`) handed to their own modules once authorised.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import Message
from multidict import CIMultiDict

from controlplane.apiserver.admission import warning_header
from controlplane.apiserver.auth import Authenticator, Credentials, UserInfo
from controlplane.apiserver.endpoints import DeleteOptions, Endpoints
from controlplane.apiserver.http import codec, patching, watch
from controlplane.apiserver.http.requestinfo import RequestInfo
from controlplane.apiserver.http.status import success_status
from controlplane.apiserver.subresources import eviction, reviews, scale
from proto import core_pb2, kinds, manifest
from proto.errors import ApiError, BadRequest, NotFound, Unauthorized

APPLY_PATCH = "application/apply-patch+yaml"
_NODE_STREAMS = {"log": "get", "exec": "create", "attach": "create", "portforward": "create"}
_NOT_FOUND = "the server could not find the requested resource"
# Kinds whose delete answers with the deleted object rather than a Status (ReturnDeletedObject in
# Kubernetes' registries); clients decode the answer as that kind (the Python client's V1Pod).
_RETURNS_DELETED = frozenset({"pods", "services"})


def _bool(query: Any, key: str) -> bool:
    return str(query.get(key, "")).lower() in ("true", "1")


def _int(query: Any, key: str) -> int | None:
    value = query.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f'{key}: invalid value "{value}": must be an integer') from None


def dry_run(query: Any) -> bool:
    values = query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise BadRequest(f'Invalid dryRun value: "{value}": supported values: "All"')
    return bool(values)


def json_response(data: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    return _json_bytes_response(codec.dumps(data), status, warnings)


def _json_bytes_response(body: bytes, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    for text in warnings or ():
        headers.add("Warning", warning_header(text))
    return web.Response(status=status, body=body, content_type=codec.JSON, headers=headers)


class ResourceHandlers:
    def __init__(self, endpoints: Endpoints, authenticator: Authenticator) -> None:
        self.endpoints = endpoints
        self.authenticator = authenticator

    # ------------------------------------------------------------------ dispatch

    async def serve(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind
                    ) -> web.StreamResponse:
        namespace = info.namespace if kind.namespaced else ""
        if info.namespace and not kind.namespaced and kind.resource != "namespaces":
            raise NotFound(_NOT_FOUND)
        if info.name and kind.namespaced and not namespace:
            raise NotFound(_NOT_FOUND)
        if info.verb not in kind.verbs and not info.subresource:
            raise _method_not_allowed(request, kind)
        sub = info.subresource
        if sub in _NODE_STREAMS and kind.resource == "pods":
            return await self.node_stream(request, user, namespace, info.name, sub)
        if sub and sub not in {s.name for s in kind.subresources}:
            raise NotFound(_NOT_FOUND)
        if sub == "scale":
            return await self.scale(request, user, info, kind, namespace)
        if sub == "binding" and info.verb == "create":
            return await self.binding(request, user, namespace, info.name)
        if sub == "eviction" and info.verb == "create":
            return await self.evict(request, user, namespace, info.name)
        if sub == "token" and info.verb == "create":
            return await self.create_token(request, user, namespace, info.name)
        handler: Callable[..., Any] | None = {
            "get": self.get, "list": self.list, "watch": self.watch, "create": self.create, "update": self.update,
            "patch": self.patch, "delete": self.delete, "deletecollection": self.delete_collection,
        }.get(info.verb)
        if handler is None or (sub and info.verb not in ("get", "update", "patch")):
            raise _method_not_allowed(request, kind)
        result: web.StreamResponse = await handler(request, user, info, kind, namespace)
        return result

    # ------------------------------------------------------------------ reads

    def _render_one(self, request: web.Request, kind: kinds.Kind, obj: Message, status: int = 200,
                    warnings: builtins.list[str] | None = None) -> web.Response:
        rendering = codec.negotiate(request.headers.get("Accept", ""), request.query.get("includeObject", ""))
        if rendering.table:
            return json_response(codec.table(kind, [obj], rendering), status, warnings)
        if rendering.as_ == codec.AS_PARTIAL:
            return json_response(codec.partial_object(obj), status, warnings)
        # object_json: the bytes of dumping object_dict, with a template's replicas sharing their spec's.
        return _json_bytes_response(codec.object_json(obj), status, warnings)

    async def get(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                  namespace: str) -> web.Response:
        obj = await self.endpoints.get(user, kind, namespace, info.name, info.subresource)
        return self._render_one(request, kind, obj)

    async def list(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                   namespace: str) -> web.Response:
        query = request.query
        page = await self.endpoints.list(
            user, kind, namespace, label_selector=query.get("labelSelector", ""),
            field_selector=query.get("fieldSelector", ""), limit=_int(query, "limit") or 0,
            continue_token=query.get("continue", ""), resource_version=query.get("resourceVersion", ""))
        rendering = codec.negotiate(request.headers.get("Accept", ""), query.get("includeObject", ""))
        if rendering.table:
            objs = [codec.parse(kind, raw) for raw in page.items]
            return json_response(codec.table(kind, objs, rendering, page.resource_version, page.continue_token,
                                             page.remaining_item_count))
        metadata: dict[str, Any] = {"resourceVersion": page.resource_version}
        if page.continue_token:
            metadata["continue"] = page.continue_token
        if page.remaining_item_count:
            metadata["remainingItemCount"] = page.remaining_item_count
        if rendering.as_ in (codec.AS_PARTIAL, codec.AS_PARTIAL_LIST):
            items = [codec.partial_object(codec.parse(kind, raw)) for raw in page.items]
            return json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                  "metadata": metadata, "items": items})
        # The biggest answer the apiserver gives: items spliced in as JSON, each encoded once per version.
        return web.Response(body=codec.list_body(kind, page.items, metadata), content_type=codec.JSON)

    async def watch(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                    namespace: str) -> web.StreamResponse:
        return await watch.serve_watch(request, self.endpoints, user, kind, namespace, name=info.name)

    # ------------------------------------------------------------------ writes

    async def _body_object(self, request: web.Request, kind: kinds.Kind) -> tuple[Message, builtins.list[str]]:
        data = codec.load(await request.read(), request.headers.get("Content-Type", codec.JSON))
        return codec.to_object(kind, data, codec.field_validation(request.query.get("fieldValidation", "")))

    async def create(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                     namespace: str) -> web.Response:
        if info.name:
            raise _method_not_allowed(request, kind)
        if kind in kinds.REVIEWS:
            data = codec.load(await request.read(), request.headers.get("Content-Type", codec.JSON))
            return json_response(await self.review(user, kind, data), 201)
        manager = patching.field_manager(request.query, request.headers, "CreateOptions")
        obj, warnings = await self._body_object(request, kind)
        obj = patching.track(kind, None, obj, manager)
        created = await self.endpoints.create(user, kind, namespace, obj, dry_run=dry_run(request.query))
        return self._render_one(request, kind, created, 201, warnings)

    async def update(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                     namespace: str) -> web.Response:
        obj, warnings = await self._body_object(request, kind)
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.name and meta.name != info.name:
            raise BadRequest(f"the name of the object ({meta.name}) does not match the name on the URL "
                             f"({info.name})")
        meta.name = info.name
        manager = patching.field_manager(request.query, request.headers, "UpdateOptions")

        def put(current: Message | None) -> Message:
            assert current is not None
            new = type(obj)()
            new.CopyFrom(obj)
            if not meta.resource_version:
                # Unconditional, but managedFields are computed against `current`: a lost race computes again.
                new.metadata.resource_version = current.metadata.resource_version  # type: ignore[attr-defined]
            return patching.track(kind, current, new, manager, subresource=info.subresource)
        updated = await self.endpoints.patch(user, kind, namespace, info.name, put,
                                             subresource=info.subresource, dry_run=dry_run(request.query),
                                             verb="update")
        return self._render_one(request, kind, updated, 200, warnings)

    async def patch(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                    namespace: str) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        validation = codec.field_validation(request.query.get("fieldValidation", ""))
        warnings: builtins.list[str] = []
        manager = patching.field_manager(request.query, request.headers, "PatchOptions")
        transform = patching.transform(kind, body, content_type, request.query, validation, warnings,
                                       manager=manager, subresource=info.subresource)
        applying = patching.media_type(content_type) == APPLY_PATCH
        existed = True

        def tracking(current: Message | None) -> Message:
            nonlocal existed
            existed = current is not None
            return transform(current)

        patched = await self.endpoints.patch(user, kind, namespace, info.name, tracking,
                                             subresource=info.subresource, dry_run=dry_run(request.query),
                                             create_missing=applying)
        return self._render_one(request, kind, patched, 200 if existed else 201, warnings)

    async def delete(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                     namespace: str) -> web.Response:
        options = await delete_options(request)
        obj = await self.endpoints.delete(user, kind, namespace, info.name, options)
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.HasField("deletion_timestamp") or kind.in_memory or kind.resource in _RETURNS_DELETED:
            return self._render_one(request, kind, obj)  # still there (terminating), or a kind that says so
        return json_response(success_status({"name": meta.name, "group": kind.group, "kind": kind.http_resource,
                                             "uid": meta.uid}))

    async def delete_collection(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                                namespace: str) -> web.Response:
        options = await delete_options(request)
        deleted = await self.endpoints.delete_collection(
            user, kind, namespace, label_selector=request.query.get("labelSelector", ""),
            field_selector=request.query.get("fieldSelector", ""), options=options)
        return json_response({"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": {},
                              "items": [codec.object_dict(o) for o in deleted]})

    async def review(self, user: UserInfo, kind: kinds.Kind, data: Any) -> dict[str, Any]:
        """Access and identity reviews: answered at once, never stored (subresources/reviews.py)."""
        authorizer = self.endpoints.authorizer
        if kind.kind == "SelfSubjectAccessReview":
            return reviews.self_subject_access_review(authorizer, user, data)
        if kind.kind == "SelfSubjectRulesReview":
            return reviews.self_subject_rules_review(authorizer, user, data)
        if kind.kind == "SubjectAccessReview":
            return reviews.subject_access_review(authorizer, user, data)
        if kind.kind == "SelfSubjectReview":
            return reviews.self_subject_review(user)
        async with self.endpoints.request(user, "create", kind):  # TokenReview: whom does a token name?
            return reviews.token_review(self._token_user, data)

    def _token_user(self, token: str, audiences: tuple[str, ...] = ()) -> UserInfo | None:
        try:
            accounts = self.endpoints.service_account_tokens
            if audiences and accounts is not None:  # for another audience than the apiserver's own
                user = accounts.lookup(token, audiences)
                if user is not None:
                    return user
            return self.authenticator.authenticate(Credentials(True, None, token))
        except Unauthorized:
            return None

    # ------------------------------------------------------------------ subresources

    async def scale(self, request: web.Request, user: UserInfo, info: RequestInfo, kind: kinds.Kind,
                    namespace: str) -> web.Response:
        if info.verb == "get":
            obj = await self.endpoints.get(user, kind, namespace, info.name, "scale")
            return json_response(scale.to_scale(kind, obj))
        if info.verb == "update":
            wanted = codec.load(await request.read(), request.headers.get("Content-Type", codec.JSON))
            manager = patching.field_manager(request.query, request.headers, "UpdateOptions")

            def put(current: Message | None) -> Message:
                assert current is not None
                return patching.track(kind, current, scale.apply_scale(kind, current, wanted), manager,
                                      subresource="scale")
            updated = await self.endpoints.patch(user, kind, namespace, info.name, put, subresource="scale",
                                                 dry_run=dry_run(request.query), verb="update")
            return json_response(scale.to_scale(kind, updated))
        if info.verb == "patch":
            body, content_type = await request.read(), request.headers.get("Content-Type", "")
            manager = patching.field_manager(request.query, request.headers, "PatchOptions")

            def patch(current: Message | None) -> Message:
                assert current is not None
                patched = patching.apply(scale.SCALE, scale.to_scale(kind, current), body, content_type)
                return patching.track(kind, current, scale.apply_scale(kind, current, patched), manager,
                                      subresource="scale")
            updated = await self.endpoints.patch(user, kind, namespace, info.name, patch, subresource="scale",
                                                 dry_run=dry_run(request.query))
            return json_response(scale.to_scale(kind, updated))
        raise _method_not_allowed(request, kind)

    async def binding(self, request: web.Request, user: UserInfo, namespace: str, name: str) -> web.Response:
        data = codec.load(await request.read(), request.headers.get("Content-Type", codec.JSON))
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("apiVersion", "kind")}
        binding = manifest.from_dict(data, _BINDING, what=f'Binding "{name}"')
        assert isinstance(binding, core_pb2.Binding)
        binding.metadata.name = binding.metadata.name or name
        if binding.metadata.name != name:
            raise BadRequest(f"the name of the binding ({binding.metadata.name}) does not match the pod ({name})")
        await self.endpoints.bind(user, namespace, binding)
        return json_response(success_status(), 201)

    async def evict(self, request: web.Request, user: UserInfo, namespace: str, name: str) -> web.Response:
        data = codec.load(await request.read(), request.headers.get("Content-Type", codec.JSON))
        options = _delete_options(eviction.delete_options(data, name=name, namespace=namespace))
        if dry_run(request.query):  # `?dryRun=All` (CreateOptions) as well as the Eviction's own deleteOptions
            options = replace(options, dry_run=True)
        await self.endpoints.evict(user, namespace, name, options)
        return json_response(success_status(), 201)

    async def create_token(self, request: web.Request, user: UserInfo, namespace: str, name: str) -> web.Response:
        """serviceaccounts/<name>/token: a TokenRequest answered with its token (serviceaccount/tokenrequest.py)."""
        from controlplane.apiserver.serviceaccount import tokenrequest
        data = codec.load(await request.read(), request.headers.get("Content-Type", codec.JSON))
        answer = await self.endpoints.create_token(user, namespace, name, tokenrequest.parse(data, name))
        return json_response(manifest.to_dict(answer), 201)

    async def node_stream(self, request: web.Request, user: UserInfo, namespace: str, pod: str,
                          subresource: str) -> web.StreamResponse:
        verb = _NODE_STREAMS[subresource]
        if subresource != "log" and request.method not in ("GET", "POST"):
            raise _method_not_allowed_text(request.method)
        await self.endpoints.authorize_node_proxy(user, verb, namespace, pod, subresource)
        kubelets = self.endpoints.kubelets
        if subresource == "log":
            from controlplane.apiserver.http import logs
            return await logs.serve_logs(request, kubelets, namespace, pod)
        if subresource == "portforward":
            from controlplane.apiserver.http import portforward
            return await portforward.serve_portforward(request, kubelets, namespace, pod)
        from controlplane.apiserver.http import exec as exec_
        return await exec_.serve_exec(request, kubelets, namespace, pod, subresource)


_BINDING = kinds.Kind("Binding", "bindings", "binding", "v1", core_pb2.Binding, True, has_status=False)


class MethodNotAllowed(ApiError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "MethodNotAllowed"


def _method_not_allowed(request: web.Request, kind: kinds.Kind) -> ApiError:
    return MethodNotAllowed(f"the server does not allow this method on the requested resource "
                            f"({kind.http_resource})")


def _method_not_allowed_text(method: str) -> ApiError:
    return MethodNotAllowed(f"the server does not allow {method} on this subresource")


def _delete_options(data: dict[str, Any]) -> DeleteOptions:
    preconditions = data.get("preconditions") or {}
    grace = data.get("gracePeriodSeconds")
    policy = data.get("propagationPolicy", "")
    if not policy and "orphanDependents" in data:
        policy = "Orphan" if data["orphanDependents"] else "Background"
    return DeleteOptions(int(grace) if grace is not None else None, policy, preconditions.get("uid", ""),
                         preconditions.get("resourceVersion", ""), "All" in (data.get("dryRun") or []))


async def delete_options(request: web.Request) -> DeleteOptions:
    """DeleteOptions from the body (kubectl) or the query (the Python client's keyword arguments)."""
    body = await request.read()
    data: dict[str, Any] = {}
    if body.strip():
        loaded = codec.load(body, request.headers.get("Content-Type", codec.JSON))
        data = eviction.validate_delete_options(loaded)
    query = request.query
    if "gracePeriodSeconds" in query:
        data["gracePeriodSeconds"] = _int(query, "gracePeriodSeconds")
    if "propagationPolicy" in query:
        data["propagationPolicy"] = query["propagationPolicy"]
    if "orphanDependents" in query:
        data["orphanDependents"] = _bool(query, "orphanDependents")
    if dry_run(query):
        data["dryRun"] = ["All"]
    data = eviction.validate_delete_options(data) if data else data
    return _delete_options(data)
