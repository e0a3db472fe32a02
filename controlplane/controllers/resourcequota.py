"""The ResourceQuota controller: each quota's `status.used` is what its namespace holds.

Admission refuses what would exceed a quota and writes the new usage when it
admits something, but only the controller sees usage go *down* (a pod deleted,
finished or past its termination grace, a Service turned ClusterIP) and knows
what a quota created after its objects must show. As Kubernetes'
pkg/controller/resourcequota, for every quota it recomputes from the informers'
caches

    status.hard = spec.hard
    status.used = what the namespace's objects use of each hard resource

(controlplane/quota.py counts, as admission does) and writes the status
subresource when it differs. A quota is synced when it is created or its spec
changes, when an object it counts is added, changes its usage or goes away,
when a terminating pod's grace period runs out, and every 5 minutes anyway
(a full resync, for whatever no event told of).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from google.protobuf.message import Message

from client import Client, Informer, InformerFactory, key_of, split_key
from client.controller import Controller, copy
from client.retry import retry_write
from controlplane import quota
from proto import core_pb2
from proto.errors import NotFound

log = logging.getLogger(__name__)

FULL_RESYNC_PERIOD = 300.0  # Kubernetes' --resource-quota-sync-period
PODS = next(e for e in quota.EVALUATORS if e.kind.resource == "pods")


class ResourceQuotaController(Controller):
    name = "resourcequota"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2,
                 resync_period: float = FULL_RESYNC_PERIOD) -> None:
        super().__init__(client, factory, workers=workers, resync_period=resync_period)
        self.quotas = factory.informer(core_pb2.ResourceQuota)
        self.quotas.add_handler(on_add=self._enqueue, on_update=self._quota_updated, on_delete=self._enqueue)
        # One informer per counted kind (shared with the other controllers where they watch it too).
        self.counted: dict[str, Informer[Any]] = {}
        for evaluator in quota.EVALUATORS:
            informer = factory.informer(evaluator.kind.message)
            self.counted[evaluator.kind.resource] = informer
            informer.add_handler(on_add=self._object_changed(evaluator),
                                 on_update=self._object_updated(evaluator),
                                 on_delete=self._object_changed(evaluator))
        self.informers = [self.quotas, *self.counted.values()]

    # ---------------------------------------------------------------- handlers: only keys

    def _enqueue(self, q: core_pb2.ResourceQuota) -> None:
        self.queue.add(key_of(q))

    def _quota_updated(self, old: core_pb2.ResourceQuota, new: core_pb2.ResourceQuota) -> None:
        # Status changes are ours or admission's; only a new spec (or hard not yet mirrored) needs a recount.
        if old.spec != new.spec or new.status.hard != new.spec.hard:
            self.queue.add(key_of(new))

    def _object_changed(self, evaluator: quota.Evaluator) -> Any:
        def handle(obj: Message) -> None:
            self._enqueue_tracking(evaluator, obj)
        return handle

    def _object_updated(self, evaluator: quota.Evaluator) -> Any:
        def handle(old: Message, new: Message) -> None:
            if old.metadata.resource_version == new.metadata.resource_version:  # type: ignore[attr-defined]
                return  # an informer resync: the full resync covers it
            if not self.quotas.store.list_by_namespace(new.metadata.namespace):  # type: ignore[attr-defined]
                return  # most namespaces have no quota: spare them counting every pod update
            # Only what changes usage (a pod finishing or terminating, a Service's type) needs a recount.
            if evaluator.usage(old) != evaluator.usage(new) or _terminating(new) != _terminating(old):
                self._enqueue_tracking(evaluator, new)
        return handle

    def _enqueue_tracking(self, evaluator: quota.Evaluator, obj: Message) -> None:
        """Queue the quotas of the object's namespace that limit something its kind uses."""
        namespace = obj.metadata.namespace  # type: ignore[attr-defined]
        for q in self.quotas.store.list_by_namespace(namespace):
            if evaluator.matching(q.spec.hard):
                self.queue.add(key_of(q))

    def resync(self) -> None:
        """Every quota again (Kubernetes' full resync); the objects' keys are not ours to sync."""
        for key in self.quotas.store.list_keys():
            self.queue.add(key)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        cached = self.quotas.store.get(key)
        if cached is None:
            return
        now = time.time()
        planned = self._with_status(cached, now)
        if planned.status != cached.status:
            try:
                await retry_write(self.client.update_status, planned, refresh=self._refresh)
            except NotFound:
                return  # deleted meanwhile
        self._requeue_at_grace_expiry(key, now)

    def _with_status(self, q: core_pb2.ResourceQuota, now: float) -> core_pb2.ResourceQuota:
        """A copy of `q` whose status is recounted from the caches."""
        namespace, _ = split_key(key_of(q))
        used = quota.usage(q, lambda kind: self.counted[kind.resource].store.list_by_namespace(namespace), now)
        new = copy(q)
        new.status.CopyFrom(quota.status(q, used))
        return new

    async def _refresh(self, last: core_pb2.ResourceQuota) -> core_pb2.ResourceQuota:
        """After a Conflict: the stored quota (its spec may have changed too), recounted."""
        fresh = await self.client.get(core_pb2.ResourceQuota, last.metadata.name, last.metadata.namespace)
        return self._with_status(fresh, time.time())

    def _requeue_at_grace_expiry(self, key: str, now: float) -> None:
        """A terminating pod stops counting at deletionTimestamp + grace, with no event to say so."""
        namespace, _ = split_key(key)
        cached = self.quotas.store.get(key)
        if cached is None or not PODS.matching(cached.spec.hard):
            return
        expiries = [e for pod in self.counted["pods"].store.list_by_namespace(namespace)
                    if (e := quota.terminating_expiry(pod)) is not None and e >= now
                    and pod.status.phase not in ("Succeeded", "Failed")]
        if expiries:
            self.queue.add_after(key, min(expiries) - now + 1)


def _terminating(obj: Message) -> bool:
    return obj.metadata.HasField("deletion_timestamp")  # type: ignore[attr-defined]
