"""Typed asyncio client for the apiserver's generic gRPC service.

Callers pass message classes and get messages back (`await client.get(Pod,
"web", "default")`); the resource name, encoding and error mapping are handled
here once. Failures arrive as `proto.errors.ApiError` subclasses.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from proto import (
    apiserver_pb2,
    apiserver_pb2_grpc,
    authentication_pb2,
    core_pb2,
    kinds,
    kubelet_pb2,
    meta_pb2,
    policy_pb2,
)
from proto.errors import ApiError, from_rpc_error

M = TypeVar("M", bound=Message)

# Lists of 10,000 pods exceed gRPC's 4 MiB default (docs/etcd.md).
MAX_MESSAGE = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # Pings find a dead apiserver under a long watch; the server allows them (SERVER_OPTIONS).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # After an apiserver restart, reconnect within seconds rather than gRPC's default 2 min.
    ("grpc.max_reconnect_backoff_ms", 5_000),
]
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass
class ObjectList(Generic[M]):
    items: list[M]
    resource_version: str
    continue_token: str = ""
    remaining_item_count: int = 0


@dataclass
class WatchEvent(Generic[M]):
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: M | None  # None for BOOKMARK
    resource_version: str


def _kind_of(cls: type[Message]) -> kinds.Kind:
    return kinds.for_message(cls())


def _decode(cls: type[M], raw: bytes) -> M:
    obj = cls()
    obj.ParseFromString(raw)
    return obj


class Client:
    """One channel to the apiserver; cheap to share between tasks."""

    def __init__(
        self,
        server: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.server = server
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(server, credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(server, options=CHANNEL_OPTIONS)
        self._stub = apiserver_pb2_grpc.ApiServerStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return await method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    # ------------------------------------------------------------ CRUD

    async def create(self, obj: M, *, namespace: str = "", dry_run: bool = False) -> M:
        kind = kinds.for_message(obj)
        ns = namespace or _namespace_of(obj)
        reply = await self._call(self._stub.Create, apiserver_pb2.CreateRequest(
            resource=kind.resource, namespace=ns, object=obj.SerializeToString(), dry_run=dry_run))
        return _decode(type(obj), reply.object)

    async def get(self, cls: type[M], name: str, namespace: str = "") -> M:
        kind = _kind_of(cls)
        reply = await self._call(self._stub.Get, apiserver_pb2.GetRequest(
            resource=kind.resource, namespace=namespace if kind.namespaced else "", name=name))
        return _decode(cls, reply.object)

    async def list(
        self,
        cls: type[M],
        namespace: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> ObjectList[M]:
        """One page (all of it when limit is 0); namespace "" lists every namespace."""
        kind = _kind_of(cls)
        reply = await self._call(self._stub.List, apiserver_pb2.ListRequest(
            resource=kind.resource, namespace=namespace if kind.namespaced else "",
            label_selector=label_selector, field_selector=field_selector, limit=limit,
            **{"continue": continue_token}), timeout=max(self.timeout, 120.0))
        return ObjectList([_decode(cls, raw) for raw in reply.items], reply.resource_version,
                          getattr(reply, "continue"), reply.remaining_item_count)

    async def update(self, obj: M, *, dry_run: bool = False) -> M:
        """Replace spec and metadata; refused with Conflict if resourceVersion is stale."""
        return await self._update(obj, "", dry_run)

    async def update_status(self, obj: M) -> M:
        """Replace status only (the status subresource)."""
        return await self._update(obj, "status", False)

    async def update_approval(self, obj: M) -> M:
        """Replace a CertificateSigningRequest's Approved/Denied conditions (the approval subresource)."""
        return await self._update(obj, "approval", False)

    async def _update(self, obj: M, subresource: str, dry_run: bool) -> M:
        kind = kinds.for_message(obj)
        reply = await self._call(self._stub.Update, apiserver_pb2.UpdateRequest(
            resource=kind.resource, namespace=_namespace_of(obj), object=obj.SerializeToString(),
            subresource=subresource, dry_run=dry_run))
        return _decode(type(obj), reply.object)

    async def delete(
        self,
        cls: type[M],
        name: str,
        namespace: str = "",
        *,
        grace_period_seconds: int | None = None,
        propagation_policy: str = "",
        uid: str = "",
        resource_version: str = "",
        dry_run: bool = False,
    ) -> M:
        """Delete (or start graceful deletion); returns the object's last state."""
        kind = _kind_of(cls)
        request = apiserver_pb2.DeleteRequest(
            resource=kind.resource, namespace=namespace if kind.namespaced else "", name=name,
            propagation_policy=propagation_policy, uid=uid, resource_version=resource_version,
            dry_run=dry_run)
        if grace_period_seconds is not None:
            request.grace_period_seconds = grace_period_seconds
        reply = await self._call(self._stub.Delete, request)
        return _decode(cls, reply.object)

    async def watch(
        self,
        cls: type[M],
        namespace: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent[M]]:
        """Changes after `resource_version` (or every object as ADDED, then changes).

        Raises `Gone` when the version was compacted away: relist, then watch again.
        """
        kind = _kind_of(cls)
        call = self._stub.Watch(apiserver_pb2.WatchRequest(
            resource=kind.resource, namespace=namespace if kind.namespaced else "",
            label_selector=label_selector, field_selector=field_selector,
            resource_version=resource_version, allow_bookmarks=allow_bookmarks), metadata=self._metadata)
        async with aclosing(_stream(call)) as events:  # closing the watch cancels the call at once
            async for event in events:
                obj = _decode(cls, event.object) if event.type != "BOOKMARK" else None
                yield WatchEvent(event.type, obj, event.resource_version)

    async def bind(self, pod: core_pb2.Pod, node_name: str) -> core_pb2.Pod:
        """Bind a pod to a node (the scheduler's one write); Conflict if already bound."""
        binding = core_pb2.Binding(api_version="v1", kind="Binding")
        binding.metadata.name = pod.metadata.name
        binding.metadata.namespace = pod.metadata.namespace
        binding.metadata.uid = pod.metadata.uid
        binding.target.kind = "Node"
        binding.target.name = node_name
        reply = await self._call(self._stub.Bind, apiserver_pb2.BindRequest(
            namespace=pod.metadata.namespace, binding=binding))
        return _decode(core_pb2.Pod, reply.object)

    async def create_token(self, namespace: str, service_account: str, *, audiences: Sequence[str] = (),
                           expiration_seconds: int | None = None, bound_pod: core_pb2.Pod | None = None
                           ) -> authentication_pb2.TokenRequest:
        """A signed token for a service account (serviceaccounts/token, `kctl create token`).

        `bound_pod` binds it to that pod (by name and uid): it stops authenticating
        once the pod is gone. Returns the TokenRequest with status.token and
        status.expirationTimestamp filled in.
        """
        request = authentication_pb2.TokenRequest(api_version="authentication.k8s.io/v1", kind="TokenRequest")
        request.metadata.name, request.metadata.namespace = service_account, namespace
        request.spec.audiences.extend(audiences)
        if expiration_seconds is not None:
            request.spec.expiration_seconds = expiration_seconds
        if bound_pod is not None:
            ref = request.spec.bound_object_ref
            ref.kind, ref.api_version = "Pod", "v1"
            ref.name, ref.uid = bound_pod.metadata.name, bound_pod.metadata.uid
        reply = await self._call(self._stub.CreateToken, apiserver_pb2.CreateTokenRequest(
            namespace=namespace, name=service_account, token_request=request))
        return reply.token_request

    async def evict(self, namespace: str, name: str, *, delete_options: meta_pb2.DeleteOptions | None = None,
                    dry_run: bool = False) -> core_pb2.Pod:
        """Evict a pod (pods/eviction, what `kctl drain` does): deleted only if its PodDisruptionBudget allows.

        Returns the pod as deleted (or marked terminating). Raises TooManyRequests when the
        budget allows no disruption now (try again later), NotFound when the pod is gone.
        """
        evicting = policy_pb2.Eviction(api_version="policy/v1", kind="Eviction")
        evicting.metadata.name, evicting.metadata.namespace = name, namespace
        if delete_options is not None:
            evicting.delete_options.CopyFrom(delete_options)
        if dry_run and "All" not in evicting.delete_options.dry_run:
            evicting.delete_options.dry_run.append("All")
        reply = await self._call(self._stub.Evict, apiserver_pb2.EvictRequest(
            namespace=namespace, name=name, eviction=evicting.SerializeToString()))
        return _decode(core_pb2.Pod, reply.object)

    async def review_access(self, verb: str, resource: str, namespace: str = "", name: str = "", *,
                            user: str = "", groups: tuple[str, ...] = ()) -> apiserver_pb2.AccessReviewReply:
        """May the caller (or `user`) do `verb` on `resource`? (`kctl auth can-i`)"""
        reply: apiserver_pb2.AccessReviewReply = await self._call(
            self._stub.ReviewAccess, apiserver_pb2.AccessReviewRequest(
                verb=verb, resource=resource, namespace=namespace, name=name, user=user, groups=groups))
        return reply

    async def logs(self, namespace: str, pod: str, container: str = "", *, follow: bool = False,
                   tail_lines: int | None = None, previous: bool = False,
                   timestamps: bool = False) -> AsyncIterator[bytes]:
        """A container's log (pods/log, served by the pod's kubelet), in chunks of whole lines."""
        request = kubelet_pb2.LogsRequest(namespace=namespace, pod=pod, container=container, follow=follow,
                                          previous=previous, timestamps=timestamps)
        if tail_lines is not None:
            request.tail_lines = tail_lines
        call = self._stub.Logs(request, metadata=self._metadata, timeout=None if follow else self.timeout)
        async with aclosing(_stream(call)) as chunks:
            async for chunk in chunks:
                yield chunk.data

    async def exec(self, namespace: str, pod: str, command: Sequence[str], container: str = "", *,
                   timeout: int = 0) -> kubelet_pb2.ExecReply:
        """Run a command in a container and wait for it (pods/exec, served by the pod's kubelet)."""
        request = kubelet_pb2.ExecRequest(namespace=namespace, pod=pod, container=container, command=command,
                                          timeout_seconds=timeout)
        reply: kubelet_pb2.ExecReply = await self._call(self._stub.Exec, request, timeout=(timeout or 60) + 15)
        return reply

    async def exec_stream(self, requests: AsyncIterator[kubelet_pb2.ExecStreamRequest]
                          ) -> AsyncGenerator[kubelet_pb2.ExecStreamReply, None]:
        """An interactive command (pods/exec, kctl exec -i/-t): `requests` begins with the start, then
        carries stdin and terminal sizes; the replies carry output and end with the exit."""
        call = self._stub.ExecStream(requests, metadata=self._metadata)  # no deadline: a session lasts
        async with aclosing(_stream(call)) as replies:
            async for reply in replies:
                yield reply

    async def version(self) -> apiserver_pb2.VersionReply:
        reply: apiserver_pb2.VersionReply = await self._call(self._stub.Version, apiserver_pb2.VersionRequest())
        return reply

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the apiserver answers (for daemons starting beside it)."""
        try:
            await self._channel.channel_ready() if timeout <= 0 else await _wait(self._channel, timeout)
        except TimeoutError as exc:
            raise ApiError(f"the apiserver at {self.server} did not answer within {timeout:.0f}s") from exc


async def _stream(call: Any) -> AsyncGenerator[Any, None]:
    """The messages of a server-streaming call; ends quietly when cancelled, raises ApiErrors otherwise."""
    try:
        async for message in call:
            yield message
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.CANCELLED:
            return
        raise from_rpc_error(err) from None
    finally:
        call.cancel()


async def _wait(channel: grpc.aio.Channel, timeout: float) -> None:
    import asyncio

    await asyncio.wait_for(channel.channel_ready(), timeout)


def _namespace_of(obj: Message) -> str:
    meta = getattr(obj, "metadata", None)
    return str(meta.namespace) if meta is not None else ""
