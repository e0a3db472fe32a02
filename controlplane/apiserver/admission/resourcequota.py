"""ResourceQuota: a namespace's quotas bound what its objects may take together.

After validation, a write is refused if it would take the namespace past a
quota's `hard` limits, with Kubernetes' words (`exceeded quota: q1, requested:
services=1, used: services=2, limited: services=2`). Every kind quota counts
(controlplane/quota.py: pods and their compute resources, services and their
node ports and load balancers, configmaps, secrets, resourcequotas and the
`count/<resource>.<group>` of workloads) is checked on create; Services also on
update (a ClusterIP Service turned NodePort takes node ports). A quota on cpu or
memory makes every container of a pod state it (`must specify requests.cpu for:
app`). Scoped quotas (Terminating, BestEffort, PriorityClass ...) see only the
pods they match.

Usage is counted from the objects actually stored, under a per-namespace lock
held across the check and the write, so concurrent creates cannot both squeeze
past the limit; that is exact with one apiserver, which is how Flotilla runs.
(Kubernetes instead trusts `status.used` and compare-and-swaps it.) Once stored,
the new usage is written into the quota's status at once; the resourcequota
controller keeps it true afterwards, when objects go away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from google.protobuf.message import Message

from controlplane import quota
from controlplane.apiserver.admission.interface import CREATE, UPDATE, Request
from proto import core_pb2, kinds
from proto.errors import Conflict, Forbidden, NotFound

log = logging.getLogger(__name__)

NAME = "ResourceQuota"

StoredObjects = Callable[[kinds.Kind, str], Awaitable[Sequence[Message]]]


class ResourceQuota:
    """A validating plugin holding the namespace's quota lock across check and write.

    `stored_pods` lists a namespace's pods as stored now (a cache could miss one
    created a moment ago), `stored_objects` the same for any kind; without it only
    pods are enforced. `update_status` writes a quota's status subresource.
    """

    NAME = NAME

    policy_kind = kinds.resolve("resourcequotas")

    def __init__(self, stored_pods: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]],
                 update_status: Callable[[core_pb2.ResourceQuota], Awaitable[object]],
                 stored_objects: StoredObjects | None = None) -> None:
        self.quotas: dict[tuple[str, str], core_pb2.ResourceQuota] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._stored_pods = stored_pods
        self._stored_objects = stored_objects
        self._update_status = update_status
        self._warned = False

    def observe(self, event_type: str, obj: Message) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        key = (meta.namespace, meta.name)
        if event_type == "DELETED":
            self.quotas.pop(key, None)
            return
        cached = self.quotas.get(key)
        # Our own status writes are cached before the watch brings them: never step back to an older copy.
        if cached is None or cached.metadata.uid != meta.uid or _version(cached) <= _version(obj):
            self.quotas[key] = obj  # type: ignore[assignment]

    def reset(self) -> None:
        self.quotas.clear()

    def validate(self, request: Request) -> AbstractAsyncContextManager[None]:
        evaluator = quota.evaluator_for(request.kind)
        if evaluator is None or request.subresource:
            return nullcontext()
        if request.operation == CREATE or (request.operation == UPDATE and evaluator.handles_update):
            return self.quota_guard(request, evaluator)
        return nullcontext()

    # ------------------------------------------------------------ ResourceQuota

    def _quotas_in(self, namespace: str) -> list[core_pb2.ResourceQuota]:
        return [q for (ns, _), q in sorted(self.quotas.items()) if ns == namespace]

    async def _stored(self, evaluator: quota.Evaluator, namespace: str) -> Sequence[Message] | None:
        if evaluator.kind.resource == "pods":
            return await self._stored_pods(namespace)
        if self._stored_objects is None:
            if not self._warned:
                log.warning("ResourceQuota: the registry lists only pods; quotas on %s are not enforced",
                            evaluator.kind.qualified_resource)
                self._warned = True
            return None
        return await self._stored_objects(evaluator.kind, namespace)

    @asynccontextmanager
    async def quota_guard(self, request: Request, evaluator: quota.Evaluator) -> AsyncIterator[None]:
        """Hold the namespace's quota lock while the object is checked and stored; then record usage."""
        obj: Any = request.obj
        namespace = request.namespace
        tracking = [q for q in self._quotas_in(namespace) if quota.matches(evaluator, q, obj)]
        delta = self._delta(request, evaluator) if tracking else {}
        if not delta:
            yield
            return
        refuse = f'{request.kind.qualified_resource} "{obj.metadata.name}" is forbidden'
        if evaluator.scoped:
            for q in tracking:
                missing = quota.missing_requirements(obj, evaluator.matching(q.spec.hard))
                if missing:
                    raise Forbidden(f"{refuse}: failed quota: {q.metadata.name}: must specify {missing}")
        async with self._locks[namespace]:
            stored = await self._stored(evaluator, namespace)
            if stored is None:
                yield
                return
            now = time.time()
            admitted: list[tuple[core_pb2.ResourceQuota, quota.Usage]] = []
            for q in tracking:
                used = quota.tracked_usage(evaluator, q, stored, now)
                requested = {name: delta[name] for name in used if name in delta}
                exceeded = sorted(name for name, amount in requested.items()
                                  if used[name].value + amount.value > quota.Amount.parse(q.spec.hard[name]).value)
                if exceeded:
                    raise Forbidden(
                        f"{refuse}: exceeded quota: {q.metadata.name}, "
                        f"requested: {quota.pretty({n: requested[n] for n in exceeded})}, "
                        f"used: {quota.pretty({n: used[n] for n in exceeded})}, "
                        f"limited: {quota.pretty({n: quota.Amount.parse(q.spec.hard[n]) for n in exceeded})}")
                if requested:
                    admitted.append((q, quota.add(used, requested)))
            yield  # the object is written here
            if request.dry_run:
                return
            for q, after in admitted:
                await self._record(q, after)

    @staticmethod
    def _delta(request: Request, evaluator: quota.Evaluator) -> quota.Usage:
        """What this write adds: the object's usage, less what the stored one used (updates); no zeros."""
        now = time.time()
        delta = evaluator.usage(request.obj, now)
        if request.operation == UPDATE and request.old is not None:
            delta = quota.subtract_non_negative(delta, evaluator.usage(request.old, now))
        return {name: amount for name, amount in delta.items() if amount.value > 0}

    async def _record(self, q: core_pb2.ResourceQuota, used: quota.Usage) -> None:
        """Show the new usage in the quota's status at once (display only: checks recount)."""
        updated = core_pb2.ResourceQuota()
        updated.CopyFrom(q)
        updated.status.CopyFrom(quota.status(q, used))
        if updated.status == q.status:
            return
        try:
            written = await self._update_status(updated)
        except (Conflict, NotFound) as exc:
            # Someone (the controller) wrote it since our cache saw it; the controller converges it.
            log.debug("quota %s/%s status not updated: %s", q.metadata.namespace, q.metadata.name, exc)
            return
        if isinstance(written, core_pb2.ResourceQuota):
            self.observe("MODIFIED", written)


def _version(obj: Message) -> int:
    try:
        return int(obj.metadata.resource_version)  # type: ignore[attr-defined]
    except ValueError:
        return 0
