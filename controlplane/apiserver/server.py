"""The apiserver's gRPC service: a thin adapter over the request core (endpoints.py).

Each RPC decodes its request, authenticates the caller from the call's
credentials, resolves the resource name to a kind and calls one `Endpoints`
method, which authorises, admits, runs the registry call and audits. `ApiError`s
become gRPC status codes in one place (`_serve`), with the Kubernetes reason in
the trailing metadata, so a handler never builds a status by hand; admission's
warnings travel there too, one `warning` entry each, on success or failure. The HTTP API
(http/) is the other adapter over the same core.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from controlplane.apiserver.auth import Authenticator, LoopbackAuthenticator, UserInfo, credentials_of
from controlplane.apiserver.endpoints import DeleteOptions, Endpoints, collect_warnings
from controlplane.apiserver.subresources import eviction
from proto import apiserver_pb2, apiserver_pb2_grpc, kinds, kubelet_pb2, manifest, policy_pb2
from proto.errors import REASON_METADATA_KEY, ApiError, BadRequest, Unauthorized

log = logging.getLogger(__name__)

R = TypeVar("R")


def _decode(kind: kinds.Kind, raw: bytes) -> Message:
    obj = kind.message()
    try:
        obj.ParseFromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"the request body is not a {kind.kind}: {exc}") from exc
    return obj


def eviction_options(request: apiserver_pb2.EvictRequest) -> DeleteOptions:
    """The DeleteOptions of an EvictRequest's Eviction, checked as the HTTP API checks a POSTed one.

    An empty Eviction (or one naming no pod) is the request's pod with default options;
    one naming another pod or namespace is a BadRequest, bad options are Invalid.
    """
    evicting = _decode(eviction.EVICTION, request.eviction)
    assert isinstance(evicting, policy_pb2.Eviction)
    body = manifest.to_dict(evicting)
    body["apiVersion"] = evicting.api_version or eviction.EVICTION.api_version
    body["kind"] = evicting.kind or eviction.EVICTION.kind
    body.setdefault("metadata", {}).setdefault("name", request.name)
    eviction.delete_options(body, name=request.name, namespace=request.namespace)  # raises what is wrong
    options = evicting.delete_options
    policy = options.propagation_policy if options.HasField("propagation_policy") else ""
    if not policy and options.HasField("orphan_dependents"):  # the deprecated spelling of Orphan
        policy = "Orphan" if options.orphan_dependents else "Background"
    return DeleteOptions(options.grace_period_seconds if options.HasField("grace_period_seconds") else None, policy,
                         options.preconditions.uid, options.preconditions.resource_version,
                         "All" in options.dry_run)


WARNING_METADATA_KEY = "warning"  # one entry per admission warning, as HTTP sends one `Warning` header each


def _warning_metadata(warnings: list[str]) -> tuple[tuple[str, str], ...]:
    # gRPC metadata values are printable ASCII: anything else is escaped rather than refused.
    return tuple((WARNING_METADATA_KEY, "".join(c if c.isprintable() else " " for c in text)
                  .encode("ascii", "backslashreplace").decode("ascii")) for text in warnings)


async def _abort(context: grpc.aio.ServicerContext, err: ApiError, warnings: list[str] | None = None) -> None:
    """End the call with the error's status code, its reason (and any admission warnings) beside it."""
    context.set_trailing_metadata(((REASON_METADATA_KEY, err.reason), *_warning_metadata(warnings or [])))
    await context.abort(err.code, str(err))


class ApiService(apiserver_pb2_grpc.ApiServerServicer):
    def __init__(self, endpoints: Endpoints, *, authenticator: Authenticator | None = None) -> None:
        self.endpoints = endpoints
        self.authenticator = authenticator or LoopbackAuthenticator()

    def _user(self, context: grpc.aio.ServicerContext) -> UserInfo:
        return self.authenticator.authenticate(credentials_of(context))

    @staticmethod
    async def _serve(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[R]]) -> R:
        with collect_warnings() as warnings:
            try:
                result = await call()
            except ApiError as err:
                await _abort(context, err, warnings)
                raise  # unreachable: abort raises
        if warnings:
            context.set_trailing_metadata(_warning_metadata(warnings))
        return result

    # ------------------------------------------------------------------ RPCs

    async def Create(self, request: apiserver_pb2.CreateRequest, context: grpc.aio.ServicerContext
                     ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            kind = kinds.resolve(request.resource)
            obj = _decode(kind, request.object)
            obj = await self.endpoints.create(self._user(context), kind, request.namespace, obj,
                                              dry_run=request.dry_run)
            return apiserver_pb2.ObjectReply(object=obj.SerializeToString())
        return await self._serve(context, run)

    async def Get(self, request: apiserver_pb2.GetRequest, context: grpc.aio.ServicerContext
                  ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            kind = kinds.resolve(request.resource)
            obj = await self.endpoints.get(self._user(context), kind, request.namespace, request.name)
            return apiserver_pb2.ObjectReply(object=obj.SerializeToString())
        return await self._serve(context, run)

    async def List(self, request: apiserver_pb2.ListRequest, context: grpc.aio.ServicerContext
                   ) -> apiserver_pb2.ListReply:
        async def run() -> apiserver_pb2.ListReply:
            kind = kinds.resolve(request.resource)
            page = await self.endpoints.list(
                self._user(context), kind, request.namespace, label_selector=request.label_selector,
                field_selector=request.field_selector, limit=request.limit,
                continue_token=getattr(request, "continue"))
            reply = apiserver_pb2.ListReply(items=page.items, resource_version=page.resource_version,
                                            remaining_item_count=page.remaining_item_count)
            setattr(reply, "continue", page.continue_token)
            return reply
        return await self._serve(context, run)

    async def Update(self, request: apiserver_pb2.UpdateRequest, context: grpc.aio.ServicerContext
                     ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            kind = kinds.resolve(request.resource)
            obj = _decode(kind, request.object)
            updated = await self.endpoints.update(self._user(context), kind, request.namespace, obj,
                                                  subresource=request.subresource, dry_run=request.dry_run)
            return apiserver_pb2.ObjectReply(object=updated.SerializeToString())
        return await self._serve(context, run)

    async def Delete(self, request: apiserver_pb2.DeleteRequest, context: grpc.aio.ServicerContext
                     ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            kind = kinds.resolve(request.resource)
            grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
            options = DeleteOptions(grace, request.propagation_policy, request.uid, request.resource_version,
                                    request.dry_run)
            obj = await self.endpoints.delete(self._user(context), kind, request.namespace, request.name, options)
            return apiserver_pb2.ObjectReply(object=obj.SerializeToString())
        return await self._serve(context, run)

    async def Watch(self, request: apiserver_pb2.WatchRequest, context: grpc.aio.ServicerContext
                    ) -> AsyncIterator[apiserver_pb2.WatchEvent]:
        try:
            kind = kinds.resolve(request.resource)
            events = await self.endpoints.watch(
                self._user(context), kind, request.namespace, resource_version=request.resource_version,
                label_selector=request.label_selector, field_selector=request.field_selector,
                allow_bookmarks=request.allow_bookmarks)
            async with aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    yield apiserver_pb2.WatchEvent(type=event.type, object=event.object,
                                                   resource_version=str(event.revision))
        except ApiError as err:
            await _abort(context, err)

    async def Bind(self, request: apiserver_pb2.BindRequest, context: grpc.aio.ServicerContext
                   ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            pod = await self.endpoints.bind(self._user(context), request.namespace, request.binding)
            return apiserver_pb2.ObjectReply(object=pod.SerializeToString())
        return await self._serve(context, run)

    async def Evict(self, request: apiserver_pb2.EvictRequest, context: grpc.aio.ServicerContext
                    ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            user = self._user(context)  # who asks, before what they asked is looked at
            pod = await self.endpoints.evict(user, request.namespace, request.name, eviction_options(request))
            return apiserver_pb2.ObjectReply(object=pod.SerializeToString())
        return await self._serve(context, run)

    async def CreateToken(self, request: apiserver_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
                          ) -> apiserver_pb2.CreateTokenReply:
        async def run() -> apiserver_pb2.CreateTokenReply:
            answer = await self.endpoints.create_token(self._user(context), request.namespace, request.name,
                                                       request.token_request)
            return apiserver_pb2.CreateTokenReply(token_request=answer)
        return await self._serve(context, run)

    async def ReviewAccess(self, request: apiserver_pb2.AccessReviewRequest, context: grpc.aio.ServicerContext
                           ) -> apiserver_pb2.AccessReviewReply:
        async def run() -> apiserver_pb2.AccessReviewReply:
            review = await self.endpoints.review_access(
                self._user(context), request.verb, request.resource, request.namespace, request.name,
                user=request.user, groups=tuple(request.groups))
            return apiserver_pb2.AccessReviewReply(allowed=review.allowed, reason=review.reason, user=review.user)
        return await self._serve(context, run)

    async def Version(self, request: apiserver_pb2.VersionRequest, context: grpc.aio.ServicerContext
                      ) -> apiserver_pb2.VersionReply:
        async def run() -> apiserver_pb2.VersionReply:
            try:
                user: UserInfo | None = self._user(context)
            except Unauthorized:
                user = None  # the version is public; only the etcd version is kept for signed-in users
            info = await self.endpoints.version(user)
            return apiserver_pb2.VersionReply(git_version=info["gitVersion"], etcd_version=info.get("etcdVersion", ""),
                                              platform=info["platform"])
        return await self._serve(context, run)

    # ------------------------------------------------------------------ node proxies (proxy.py)

    async def Logs(self, request: kubelet_pb2.LogsRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[kubelet_pb2.LogChunk]:
        try:
            await self.endpoints.authorize_node_proxy(self._user(context), "get", request.namespace, request.pod,
                                                      "log")
            async for chunk in self.endpoints.kubelets.logs(request):
                yield chunk
        except ApiError as err:
            await _abort(context, err)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), err.details() or "")

    async def ExecStream(self, request_iterator: AsyncIterator[kubelet_pb2.ExecStreamRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[kubelet_pb2.ExecStreamReply]:
        try:
            requests = aiter(request_iterator)
            first = await anext(requests, None)
            if first is None or not first.HasField("start"):
                raise BadRequest("an exec stream must begin with its start (namespace, pod, command)")
            start = first.start
            await self.endpoints.authorize_node_proxy(self._user(context), "create", start.namespace, start.pod,
                                                      "exec")
            # aclosing: a user who goes away ends the kubelet call at once, not at garbage collection.
            async with aclosing(self.endpoints.kubelets.exec_stream(start, requests)) as replies:
                async for reply in replies:
                    yield reply
        except ApiError as err:
            await _abort(context, err)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), err.details() or "")

    async def Exec(self, request: kubelet_pb2.ExecRequest, context: grpc.aio.ServicerContext
                   ) -> kubelet_pb2.ExecReply:
        async def run() -> kubelet_pb2.ExecReply:
            await self.endpoints.authorize_node_proxy(self._user(context), "create", request.namespace,
                                                      request.pod, "exec")
            return await self.endpoints.kubelets.exec(request)
        try:
            return await self._serve(context, run)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), err.details() or "")
            raise  # unreachable: abort raises
