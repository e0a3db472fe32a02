"""The apiserver's gRPC service: decode, authenticate, authorise, admit, hand to the registry.

Each RPC resolves the resource name to a kind, checks the caller (authorization,
then the admission chain's checks of the request alone), runs the registry call
(which runs the rest of the chain around the write) and encodes the answer. `ApiError`s become gRPC status codes in
one place (`_serve`), so a handler never builds a status by hand.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from contextvars import ContextVar
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from controlplane.apiserver.audit import AuditLog
from controlplane.apiserver.auth import (
    AUTHENTICATED,
    AlwaysAllow,
    Attributes,
    Authenticator,
    Authorizer,
    LoopbackAuthenticator,
    UserInfo,
)
from controlplane.apiserver.proxy import KubeletClientTLS, KubeletProxy
from controlplane.apiserver.registry import Registry
from proto import apiserver_pb2, apiserver_pb2_grpc, kinds, kubelet_pb2
from proto.errors import REASON_METADATA_KEY, ApiError, BadRequest, Forbidden

log = logging.getLogger(__name__)

VERSION = "v0.1.0-flotilla"
BOOKMARK_INTERVAL = 30.0  # seconds of quiet before a watch gets a bookmark

R = TypeVar("R")

# The request being served by this task (each gRPC call runs in its own task).
_request: ContextVar[Attributes | None] = ContextVar("flotilla_request", default=None)


def _decode(kind: kinds.Kind, raw: bytes) -> Message:
    obj = kind.message()
    try:
        obj.ParseFromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"the request body is not a {kind.kind}: {exc}") from exc
    return obj


async def _abort(context: grpc.aio.ServicerContext, err: ApiError) -> None:
    """End the call with the error's status code, its reason beside it."""
    context.set_trailing_metadata(((REASON_METADATA_KEY, err.reason),))
    await context.abort(err.code, str(err))


class ApiService(apiserver_pb2_grpc.ApiServerServicer):
    def __init__(self, registry: Registry, *, authenticator: Authenticator | None = None,
                 authorizer: Authorizer | None = None, bookmark_interval: float = BOOKMARK_INTERVAL,
                 audit: AuditLog | None = None, kubelet_tls: KubeletClientTLS | None = None) -> None:
        self.registry = registry
        self.audit = audit
        self.authenticator = authenticator or LoopbackAuthenticator()
        self.authorizer = authorizer or AlwaysAllow()
        self.bookmark_interval = bookmark_interval
        self.kubelets = KubeletProxy(registry, kubelet_tls)
        registry.admission.set_authorizer(self.authorizer)  # CSR approval checks the signer itself

    async def _serve(self, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[R]]) -> R:
        started = time.monotonic()
        _request.set(None)
        try:
            result = await call()
        except ApiError as err:
            self._audit(err.reason, started)
            await _abort(context, err)
            raise  # unreachable: abort raises
        self._audit("OK", started)
        return result

    def _audit(self, result: str, started: float) -> None:
        attrs = _request.get()
        if self.audit is not None and attrs is not None:
            self.audit.record(attrs, result, started)

    async def _admit(self, context: grpc.aio.ServicerContext, verb: str, resource: str, namespace: str = "",
                     name: str = "", subresource: str = "") -> kinds.Kind:
        """Authenticate, authorize, and run admission's checks of the request alone (node restriction)."""
        kind = kinds.resolve(resource)
        user = self.authenticator.authenticate(context)
        attrs = Attributes(user, verb, kind.resource, namespace if kind.namespaced else "", name, subresource,
                           kind.group)
        _request.set(attrs)  # for the audit record once the call ends
        self.authorizer.authorize(attrs)
        await self.registry.admission.validate_request(attrs)
        return kind

    # ------------------------------------------------------------------ RPCs

    async def Create(self, request: apiserver_pb2.CreateRequest, context: grpc.aio.ServicerContext
                     ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            obj = _decode(kinds.resolve(request.resource), request.object)
            kind = await self._admit(context, "create", request.resource, request.namespace,
                                     obj.metadata.name)  # type: ignore[attr-defined]
            obj = await self.registry.create(kind, request.namespace, obj, dry_run=request.dry_run,
                                             caller=_request.get())
            return apiserver_pb2.ObjectReply(object=obj.SerializeToString())
        return await self._serve(context, run)

    async def Get(self, request: apiserver_pb2.GetRequest, context: grpc.aio.ServicerContext
                  ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            kind = await self._admit(context, "get", request.resource, request.namespace, request.name)
            obj = await self.registry.get(kind, request.namespace, request.name)
            return apiserver_pb2.ObjectReply(object=obj.SerializeToString())
        return await self._serve(context, run)

    async def List(self, request: apiserver_pb2.ListRequest, context: grpc.aio.ServicerContext
                   ) -> apiserver_pb2.ListReply:
        async def run() -> apiserver_pb2.ListReply:
            kind = await self._admit(context, "list", request.resource, request.namespace)
            items, revision, token, remaining = await self.registry.list(
                kind, request.namespace, request.label_selector, request.field_selector,
                request.limit, getattr(request, "continue"))
            reply = apiserver_pb2.ListReply(items=items,
                                            resource_version=str(revision), remaining_item_count=remaining)
            setattr(reply, "continue", token)
            return reply
        return await self._serve(context, run)

    async def Update(self, request: apiserver_pb2.UpdateRequest, context: grpc.aio.ServicerContext
                     ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            kind = kinds.resolve(request.resource)
            obj = _decode(kind, request.object)
            await self._admit(context, "update", request.resource, request.namespace,
                              obj.metadata.name, request.subresource)  # type: ignore[attr-defined]
            updated = await self.registry.update(kind, request.namespace, obj, subresource=request.subresource,
                                                 dry_run=request.dry_run, caller=_request.get())
            return apiserver_pb2.ObjectReply(object=updated.SerializeToString())
        return await self._serve(context, run)

    async def Delete(self, request: apiserver_pb2.DeleteRequest, context: grpc.aio.ServicerContext
                     ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            kind = await self._admit(context, "delete", request.resource, request.namespace, request.name)
            grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
            obj = await self.registry.delete(
                kind, request.namespace, request.name, grace_period=grace,
                propagation_policy=request.propagation_policy, uid=request.uid,
                resource_version=request.resource_version, dry_run=request.dry_run, caller=_request.get())
            return apiserver_pb2.ObjectReply(object=obj.SerializeToString())
        return await self._serve(context, run)

    async def Watch(self, request: apiserver_pb2.WatchRequest, context: grpc.aio.ServicerContext
                    ) -> AsyncIterator[apiserver_pb2.WatchEvent]:
        try:
            kind = await self._admit(context, "watch", request.resource, request.namespace)
            interval = self.bookmark_interval if request.allow_bookmarks else 0.0
            async for event in self.registry.watch(kind, request.namespace, request.resource_version,
                                                   request.label_selector, request.field_selector, interval):
                yield apiserver_pb2.WatchEvent(type=event.type, object=event.object,
                                               resource_version=str(event.revision))
        except ApiError as err:
            await _abort(context, err)

    async def Bind(self, request: apiserver_pb2.BindRequest, context: grpc.aio.ServicerContext
                   ) -> apiserver_pb2.ObjectReply:
        async def run() -> apiserver_pb2.ObjectReply:
            await self._admit(context, "create", "pods", request.namespace, request.binding.metadata.name, "binding")
            pod = await self.registry.bind(request.namespace, request.binding)
            return apiserver_pb2.ObjectReply(object=pod.SerializeToString())
        return await self._serve(context, run)

    async def ReviewAccess(self, request: apiserver_pb2.AccessReviewRequest, context: grpc.aio.ServicerContext
                           ) -> apiserver_pb2.AccessReviewReply:
        async def run() -> apiserver_pb2.AccessReviewReply:
            caller = self.authenticator.authenticate(context)
            subject = caller
            if request.user and request.user != caller.name:
                # Asking about someone else is a SubjectAccessReview: reviewers only.
                self.authorizer.authorize(Attributes(caller, "create", "subjectaccessreviews",
                                                     api_group="authorization.k8s.io"))
                subject = UserInfo(request.user, (*request.groups, AUTHENTICATED))
            resource, _, subresource = request.resource.partition("/")
            kind = kinds.resolve(resource)
            attrs = Attributes(subject, request.verb, kind.resource, request.namespace if kind.namespaced else "",
                               request.name, subresource, kind.group)
            try:
                self.authorizer.authorize(attrs)
            except Forbidden as denied:
                return apiserver_pb2.AccessReviewReply(allowed=False, reason=str(denied), user=subject.name)
            return apiserver_pb2.AccessReviewReply(allowed=True, user=subject.name)
        return await self._serve(context, run)

    async def Version(self, request: apiserver_pb2.VersionRequest, context: grpc.aio.ServicerContext
                      ) -> apiserver_pb2.VersionReply:
        async def run() -> apiserver_pb2.VersionReply:
            return apiserver_pb2.VersionReply(
                git_version=VERSION, etcd_version=await self.registry.storage.etcd_version(),
                platform=f"{platform.system().lower()}/{platform.machine()}")
        return await self._serve(context, run)

    # ------------------------------------------------------------------ node proxies (proxy.py)

    async def Logs(self, request: kubelet_pb2.LogsRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[kubelet_pb2.LogChunk]:
        try:
            await self._admit(context, "get", "pods", request.namespace, request.pod, "log")
            async for chunk in self.kubelets.logs(request):
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
            await self._admit(context, "create", "pods", start.namespace, start.pod, "exec")
            # aclosing: a user who goes away ends the kubelet call at once, not at garbage collection.
            async with aclosing(self.kubelets.exec_stream(start, requests)) as replies:
                async for reply in replies:
                    yield reply
        except ApiError as err:
            await _abort(context, err)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), err.details() or "")

    async def Exec(self, request: kubelet_pb2.ExecRequest, context: grpc.aio.ServicerContext
                   ) -> kubelet_pb2.ExecReply:
        async def run() -> kubelet_pb2.ExecReply:
            await self._admit(context, "create", "pods", request.namespace, request.pod, "exec")
            return await self.kubelets.exec(request)
        try:
            return await self._serve(context, run)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), err.details() or "")
            raise  # unreachable: abort raises
