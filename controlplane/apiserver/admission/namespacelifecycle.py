"""NamespaceLifecycle: nothing new is created in a namespace that is missing or being deleted.

Without it, the namespace controller could never finish: it deletes what is in
a terminating namespace while clients keep adding more. Namespaces are read
from a cache on this hot path (every create), fed by the registry's namespace
watch and by the registry's own namespace writes, falling back to etcd on a
miss so a namespace created a moment ago works at once. The same cache answers
`get` for plugins that read a namespace's labels (PodSecurity).
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

    NAME = NAME

    def __init__(self, read_namespace: Callable[[str], Awaitable[Message | None]]) -> None:
        self._read_namespace = read_namespace
        self._terminating: dict[str, bool] = {}  # namespace name -> being deleted
        self._namespaces: dict[str, Message] = {}  # namespace name -> the newest copy seen

    def observe(self, event_type: str, ns: Message) -> None:
        name = ns.metadata.name  # type: ignore[attr-defined]
        if event_type == "DELETED":
            self._terminating.pop(name, None)
            self._namespaces.pop(name, None)
            return
        # The registry reports its own writes at once and the watch reports them again a moment
        # later: an older copy must not replace a newer one (a relabel would briefly be undone).
        cached = self._namespaces.get(name)
        if cached is not None and _revision(cached) > _revision(ns):
            return
        self._namespaces[name] = ns
        self._terminating[name] = ns.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]

    def reset(self) -> None:
        self._terminating.clear()
        self._namespaces.clear()

    async def get(self, name: str) -> Message | None:
        """A Namespace as last seen (read from storage on a cache miss); None if there is none."""
        ns = self._namespaces.get(name)
        if ns is None:
            ns = await self._read_namespace(name)
            if ns is not None:
                self.observe("ADDED", ns)
        return ns

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
            ns = await self.get(namespace)
            if ns is None:
                raise NotFound(f'namespaces "{namespace}" not found')
            terminating = ns.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]
        if terminating:
            raise NamespaceTerminating(
                f"unable to create new content in namespace {namespace} because it is being terminated")


def _revision(ns: Message) -> int:
    version = ns.metadata.resource_version  # type: ignore[attr-defined]
    return int(version) if version.isdigit() else 0
