"""NamespaceLifecycle: nothing new is created in a namespace that is missing or being deleted.

Without it, the namespace controller could never finish: it deletes what is in
a terminating namespace while clients keep adding more. Namespaces are read
from a cache on this hot path (every create), fed by the registry's namespace
watch and by the registry's own namespace writes, falling back to etcd on a
miss so a namespace created a moment ago works at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import CREATE, Request
from proto.errors import BadRequest, NamespaceTerminating, NotFound

NAME = "NamespaceLifecycle"


class NamespaceLifecycle:
    """A validating plugin; `read_namespace` fetches one Namespace from storage (None: absent)."""

    def __init__(self, read_namespace: Callable[[str], Awaitable[Message | None]]) -> None:
        self._read_namespace = read_namespace
        self._terminating: dict[str, bool] = {}  # namespace name -> being deleted

    def observe(self, event_type: str, ns: Message) -> None:
        name = ns.metadata.name  # type: ignore[attr-defined]
        if event_type == "DELETED":
            self._terminating.pop(name, None)
        else:
            self._terminating[name] = ns.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]

    def reset(self) -> None:
        self._terminating.clear()

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        if request.operation == CREATE and request.kind.namespaced:
            await self._check(request)
        yield

    async def _check(self, request: Request) -> None:
        namespace = request.namespace
        if not namespace:
            raise BadRequest(f"{request.kind.qualified_resource} must be created in a namespace")
        terminating = self._terminating.get(namespace)
        if terminating is None:
            ns = await self._read_namespace(namespace)
            if ns is None:
                raise NotFound(f'namespaces "{namespace}" not found')
            terminating = ns.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]
            self._terminating[namespace] = terminating
        if terminating:
            raise NamespaceTerminating(
                f"unable to create new content in namespace {namespace} because it is being terminated")
