"""The namespace controller: empties a terminating namespace, then lets it go.

`kctl delete namespace x` only marks the namespace Terminating: the
apiserver holds it with the `kubernetes` entry in spec.finalizers and refuses
new objects in it. This controller deletes every object of every namespaced
kind in it (listing live, not from a cache, so nothing created just before
the mark is missed), and once all lists come back empty removes its
finalizer with a plain update, upon which the apiserver deletes the
namespace. Pods on nodes take their grace period to go, so the namespace is
re-checked every second until they have.
"""

from __future__ import annotations

import asyncio
import logging

from client import Client, InformerFactory, key_of
from client.controller import Controller, copy
from proto import core_pb2, kinds
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
RECHECK = 1.0


class NamespaceController(Controller):
    name = "namespace"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 5) -> None:
        super().__init__(client, factory, workers=workers)
        self.namespaces = factory.informer(core_pb2.Namespace)
        self.informers = [self.namespaces]
        self.namespaces.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n))

    def _enqueue(self, ns: core_pb2.Namespace) -> None:
        if ns.metadata.HasField("deletion_timestamp"):
            self.queue.add(key_of(ns))

    async def sync(self, key: str) -> None:
        ns = self.namespaces.store.get(key)
        if ns is None or not ns.metadata.HasField("deletion_timestamp"):
            return
        if FINALIZER not in ns.spec.finalizers:
            return
        remaining = 0
        for kind in kinds.KINDS:
            if kind.namespaced:
                remaining += await self._delete_all(kind, key)
        if remaining:
            # Pods with a grace period (and objects with finalizers) take their time.
            self.queue.add_after(key, RECHECK)
            return
        new = copy(ns)
        kept = [f for f in new.spec.finalizers if f != FINALIZER]
        del new.spec.finalizers[:]
        new.spec.finalizers.extend(kept)
        try:
            await self.client.update(new)
        except NotFound:
            return
        log.info("namespace %s is empty: released", key)

    async def _delete_all(self, kind: kinds.Kind, namespace: str) -> int:
        """Ask for every object of `kind` in `namespace` to be deleted; returns how many are left."""
        items = (await self.client.list(kind.message, namespace)).items
        pending = [obj for obj in items if not obj.metadata.HasField("deletion_timestamp")]  # type: ignore[attr-defined]

        async def delete(obj: object) -> None:
            try:
                await self.client.delete(kind.message, obj.metadata.name, namespace,  # type: ignore[attr-defined]
                                         propagation_policy="Background")
            except (NotFound, Conflict):
                pass

        await asyncio.gather(*(delete(obj) for obj in pending))
        if kind.in_memory or not items:
            return 0
        if pending:
            # Most objects go at once; count what is still held (pods in their grace period).
            items = (await self.client.list(kind.message, namespace)).items
        return len(items)
