"""The garbage collector: deletes objects whose owners are gone, in the order deletion asked for.

Ownership is `metadata.ownerReferences` (a Deployment owns its ReplicaSets, a
ReplicaSet its pods). The collector watches every namespaced kind, indexes
objects by owner uid, and handles three cases, as Kubernetes' GC does:

- background (the default): the owner is deleted at once; each dependent
  whose owners are all gone is then deleted in turn, down the tree;
- foreground: the apiserver keeps the owner, terminating, with the
  `foregroundDeletion` finalizer; the collector deletes its dependents
  (foreground as well) and removes the finalizer when none is left;
- orphan: the owner is held by the `orphan` finalizer until the collector has
  removed the owner's references from every dependent; then it goes alone.

Absence is never decided from the cache alone: an owner missing from it is
looked up live (by uid), since a freshly created owner can reach a dependent's
watch before its own.

Owners of kinds the kinds table does not know — custom resources, served only
over the HTTP API — are looked up through the dynamic client (client/dynamic.py)
when the collector has the cluster's HTTP address; it does not watch them, so
their dependents are checked again every `custom_owner_period` seconds instead
of at the owner's deletion. An owner whose kind the cluster does not serve at
all is never taken as gone (as Kubernetes, which cannot resolve it either).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from google.protobuf.message import Message

from client import Client, Informer, InformerFactory, key_of
from client.controller import Controller, copy, meta
from client.dynamic import DynamicClient
from controlplane.controllers import podutil
from proto import kinds
from proto.errors import BadRequest, Conflict, NotFound

log = logging.getLogger(__name__)

OWNER_INDEX = "ownerUID"
ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"
ABSENT, SOLID, WAITING = "absent", "solid", "waiting"  # an owner's state, for its dependents
# Events are never owned and are the bulk of writes; leases belong to nodes and the leader.
UNWATCHED = ("Event", "Lease")


def owner_uids(obj: Message) -> list[str]:
    return [ref.uid for ref in meta(obj).owner_references]


def collected_kinds() -> list[kinds.Kind]:
    return [k for k in kinds.KINDS if k.namespaced and not k.in_memory and k.kind not in UNWATCHED]


class GarbageCollector(Controller):
    name = "garbagecollector"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 10,
                 dynamic: DynamicClient | None = None, custom_owner_period: float = 5.0) -> None:
        super().__init__(client, factory, workers=workers)
        self.dynamic = dynamic
        self.custom_owner_period = custom_owner_period
        # Items with an owner of a kind outside the kinds table: polled, since its deletion is not watched.
        self._custom_owned: set[str] = set()
        self.by_kind: dict[str, Informer[Any]] = {}
        for kind in collected_kinds():
            informer = factory.informer(kind.message)
            informer.store.add_index(OWNER_INDEX, owner_uids)
            informer.add_handler(on_add=self._changed, on_update=lambda _o, n: self._changed(n),
                                 on_delete=self._deleted)
            self.by_kind[kind.kind] = informer
        self.informers = list(self.by_kind.values())

    async def run(self) -> None:
        # A kind this apiserver does not serve (an older server, a newer client) is left
        # unmonitored rather than stopping the collector: owners of that kind are then
        # looked up live.
        for kind_name, informer in list(self.by_kind.items()):
            try:
                await informer.wait_synced()
            except (NotFound, BadRequest) as err:
                log.warning("garbage collector: not watching %s: %s", kind_name, err)
                del self.by_kind[kind_name]
                self.informers.remove(informer)
        if self.dynamic is None:
            await super().run()
            return
        poll = asyncio.create_task(self._poll_custom_owned())
        try:
            async with self.dynamic:
                await super().run()
        finally:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll

    async def _poll_custom_owned(self) -> None:
        while True:
            await asyncio.sleep(self.custom_owner_period)
            for item in list(self._custom_owned):
                self.queue.add(item)

    # ---------------------------------------------------------------- handlers

    @staticmethod
    def _item(obj: Message) -> str:
        return f"{kinds.for_message(obj).kind}|{key_of(obj)}"

    def _changed(self, obj: Message) -> None:
        m = meta(obj)
        item = self._item(obj)
        if self.dynamic is not None:
            if any(not _built_in(ref.api_version, ref.kind) for ref in m.owner_references):
                self._custom_owned.add(item)
            else:
                self._custom_owned.discard(item)
        if m.owner_references or (m.HasField("deletion_timestamp") and (ORPHAN in m.finalizers
                                                                         or FOREGROUND in m.finalizers)):
            self.queue.add(item)

    def _deleted(self, obj: Message) -> None:
        self._custom_owned.discard(self._item(obj))
        # Its dependents may now be garbage, and owners waiting on it may now finish.
        for dependent in self.dependents(meta(obj).uid):
            self.queue.add(self._item(dependent))
        for ref in meta(obj).owner_references:
            informer = self.by_kind.get(ref.kind)
            if informer is not None:
                self.queue.add(f"{ref.kind}|{meta(obj).namespace}/{ref.name}")

    def dependents(self, uid: str) -> list[Message]:
        return [d for informer in self.informers for d in informer.store.list_by_index(OWNER_INDEX, uid)]

    # ---------------------------------------------------------------- sync

    async def sync(self, item: str) -> None:
        kind_name, _, key = item.partition("|")
        informer = self.by_kind.get(kind_name)
        obj = informer.store.get(key) if informer is not None else None
        if obj is None:
            return
        m = meta(obj)
        if m.HasField("deletion_timestamp"):
            if ORPHAN in m.finalizers:
                await self._orphan_dependents(obj)
            elif FOREGROUND in m.finalizers:
                await self._delete_dependents_first(obj)
            return
        if not m.owner_references:
            return
        namespace = m.namespace
        absent, solid, waiting = [], [], []
        for ref in m.owner_references:
            state = await self._owner_state(ref, namespace)
            if state == ABSENT:
                absent.append(ref.uid)
            elif state == WAITING:
                waiting.append(ref)
            else:
                solid.append(ref.uid)
        if not solid and not waiting:
            log.info("deleting %s: all its owners are gone", item)
            await self._delete(obj, "Background")
        elif absent:
            new = copy(obj)
            for uid in absent:
                podutil.remove_owner(new, uid)
            await self.client.update(new)
        elif waiting and not solid and any(r.block_owner_deletion for r in waiting):
            await self._delete(obj, "Foreground")

    async def _owner_state(self, ref: Any, namespace: str) -> str:
        """Whether the owner `ref` points at exists (with that uid), and waits for its dependents."""
        owner: Message | None = None
        if not _built_in(ref.api_version, ref.kind):
            return await self._custom_owner_state(ref, namespace)
        informer = self.by_kind.get(ref.kind)
        if informer is not None:
            cached = informer.store.get_by_name(namespace, ref.name)
            if cached is not None and meta(cached).uid == ref.uid:
                owner = cached
        if owner is None:
            try:
                kind = kinds.for_kind(ref.api_version, ref.kind)
            except NotFound:
                return SOLID  # a kind this apiserver does not serve: never collect on its account
            try:
                owner = await self.client.get(kind.message, ref.name, namespace if kind.namespaced else "")
            except NotFound:
                return ABSENT
            if meta(owner).uid != ref.uid:
                return ABSENT  # a namesake: the owner we knew is gone
        if meta(owner).HasField("deletion_timestamp") and FOREGROUND in meta(owner).finalizers:
            return WAITING
        return SOLID

    async def _custom_owner_state(self, ref: Any, namespace: str) -> str:
        """An owner of a custom kind, read over the HTTP API (SOLID when that cannot be asked)."""
        if self.dynamic is None:
            return SOLID
        try:
            resource = await self.dynamic.resource(ref.api_version, ref.kind)
        except NotFound:
            return SOLID  # a kind the cluster does not serve (its CRD gone or never made): never collect for it
        try:
            owner = await self.dynamic.get(ref.api_version, ref.kind, namespace if resource.namespaced else "",
                                           ref.name)
        except NotFound:
            return ABSENT
        metadata = owner.get("metadata", {})
        if metadata.get("uid") != ref.uid:
            return ABSENT
        if metadata.get("deletionTimestamp") and FOREGROUND in metadata.get("finalizers", []):
            return WAITING
        return SOLID

    async def _delete(self, obj: Message, policy: str) -> None:
        m = meta(obj)
        try:
            await self.client.delete(type(obj), m.name, m.namespace, uid=m.uid, propagation_policy=policy)
        except (NotFound, Conflict):
            pass

    async def _delete_dependents_first(self, owner: Message) -> None:
        remaining = self.dependents(meta(owner).uid)
        for dependent in remaining:
            if not meta(dependent).HasField("deletion_timestamp"):
                await self._delete(dependent, "Foreground")
        if not remaining:
            await self._remove_finalizer(owner, FOREGROUND)
        # Otherwise each dependent's deletion brings the owner back here (_deleted).

    async def _orphan_dependents(self, owner: Message) -> None:
        uid = meta(owner).uid
        for dependent in self.dependents(uid):
            new = copy(dependent)
            if podutil.remove_owner(new, uid):
                try:
                    await self.client.update(new)
                except NotFound:
                    pass
        await self._remove_finalizer(owner, ORPHAN)

    async def _remove_finalizer(self, obj: Message, finalizer: str) -> None:
        new = copy(obj)
        kept = [f for f in meta(new).finalizers if f != finalizer]
        del meta(new).finalizers[:]
        meta(new).finalizers.extend(kept)
        try:
            await self.client.update(new)
        except NotFound:
            pass


def _built_in(api_version: str, kind: str) -> bool:
    try:
        kinds.for_kind(api_version, kind)
    except NotFound:
        return False
    return True
