"""ResourceQuota: a namespace's quotas bound what its pods may take together.

After validation, a pod is refused if it would take the namespace past a
quota's `hard` limits (pods, requests.cpu/memory, limits.cpu/memory); once it
is stored, the new usage is recorded in the quota's status.

Quota usage is counted from the pods actually stored (running and pending;
finished pods no longer count), under a per-namespace lock held across the
check and the write, so concurrent creates cannot both squeeze past the limit.
That is exact with one apiserver, which is how Flotilla runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from decimal import Decimal

from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import CREATE, Request
from proto import core_pb2, kinds
from proto.errors import Conflict, Forbidden, NotFound
from proto.quantity import format_bytes, format_milli, parse_quantity

log = logging.getLogger(__name__)

NAME = "ResourceQuota"

COMPUTE = ("cpu", "memory")
# Quota keys and what each counts; plain "cpu"/"memory" mean requests, as in Kubernetes.
QUOTA_KEYS = {"pods": "pods", "requests.cpu": "requests.cpu", "cpu": "requests.cpu",
              "requests.memory": "requests.memory", "memory": "requests.memory",
              "limits.cpu": "limits.cpu", "limits.memory": "limits.memory"}


def pod_usage(pod: core_pb2.Pod) -> dict[str, Decimal]:
    """What one pod counts against a quota."""
    usage: dict[str, Decimal] = defaultdict(Decimal)
    usage["pods"] = Decimal(1)
    for container in pod.spec.containers:
        for resource in COMPUTE:
            if resource in container.resources.requests:
                usage[f"requests.{resource}"] += parse_quantity(container.resources.requests[resource])
            if resource in container.resources.limits:
                usage[f"limits.{resource}"] += parse_quantity(container.resources.limits[resource])
    return usage


def _show(key: str, value: Decimal) -> str:
    if key.endswith("cpu"):
        return format_milli(int(value * 1000))
    if key.endswith("memory"):
        return format_bytes(int(value))
    return str(int(value))


class ResourceQuota:
    """A validating plugin holding the namespace's quota lock across check and write: pods, on create.

    `stored_pods` lists a namespace's pods as stored now (a cache could miss one
    created a moment ago); `update_status` writes a quota's status subresource.
    """

    NAME = NAME

    policy_kind = kinds.resolve("resourcequotas")

    def __init__(self, stored_pods: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]],
                 update_status: Callable[[core_pb2.ResourceQuota], Awaitable[object]]) -> None:
        self.quotas: dict[tuple[str, str], core_pb2.ResourceQuota] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._stored_pods = stored_pods
        self._update_status = update_status

    def observe(self, event_type: str, obj: Message) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        if event_type == "DELETED":
            self.quotas.pop((meta.namespace, meta.name), None)
        else:
            self.quotas[(meta.namespace, meta.name)] = obj  # type: ignore[assignment]

    def reset(self) -> None:
        self.quotas.clear()

    def validate(self, request: Request) -> AbstractAsyncContextManager[None]:
        if request.operation == CREATE and isinstance(request.obj, core_pb2.Pod):
            return self.quota_guard(request.obj, dry_run=request.dry_run)
        return nullcontext()

    # ------------------------------------------------------------ ResourceQuota

    def _quotas_in(self, namespace: str) -> list[core_pb2.ResourceQuota]:
        return [q for (ns, _), q in sorted(self.quotas.items()) if ns == namespace]

    @asynccontextmanager
    async def quota_guard(self, pod: core_pb2.Pod, *, dry_run: bool = False) -> AsyncIterator[None]:
        """Hold the namespace's quota lock while `pod` is checked and stored; then record usage."""
        namespace = pod.metadata.namespace
        if not self._quotas_in(namespace):
            yield
            return
        async with self._locks[namespace]:
            used: dict[str, Decimal] = defaultdict(Decimal)
            for other in await self._stored_pods(namespace):
                if other.status.phase not in ("Succeeded", "Failed"):
                    for key, value in pod_usage(other).items():
                        used[key] += value
            wanted = pod_usage(pod)
            for quota in self._quotas_in(namespace):
                self._check(pod, quota, used, wanted)
            yield  # the pod is written here
            if dry_run:
                return
            after = {k: used[k] + wanted.get(k, Decimal(0)) for k in set(used) | set(wanted)}
            for quota in self._quotas_in(namespace):
                await self._record(quota, after)

    async def _record(self, quota: core_pb2.ResourceQuota, used: dict[str, Decimal]) -> None:
        """Show the namespace's usage in the quota's status (display only: checks recount)."""
        try:
            await self._update_status(quota_status(quota, used))
        except (Conflict, NotFound) as exc:
            log.info("quota %s/%s status not updated: %s", quota.metadata.namespace, quota.metadata.name, exc)

    @staticmethod
    def _check(pod: core_pb2.Pod, quota: core_pb2.ResourceQuota, used: dict[str, Decimal],
               wanted: dict[str, Decimal]) -> None:
        over = []
        for key, hard in sorted(quota.spec.hard.items()):
            counted = QUOTA_KEYS.get(key)
            if counted is None:
                continue
            limit = parse_quantity(hard)
            if counted.startswith(("requests.", "limits.")) and counted not in wanted:
                # A quota on a compute resource requires every pod to state it.
                raise Forbidden(f'pods "{pod.metadata.name}" is forbidden: failed quota: {quota.metadata.name}: '
                                f"must specify {counted.split('.')[1]} in {counted.split('.')[0]}")
            if used[counted] + wanted.get(counted, Decimal(0)) > limit:
                over.append((key, counted, limit))
        if over:
            requested = ",".join(f"{k}={_show(c, wanted.get(c, Decimal(0)))}" for k, c, _ in over)
            in_use = ",".join(f"{k}={_show(c, used[c])}" for k, c, _ in over)
            limited = ",".join(f"{k}={_show(c, lim)}" for k, c, lim in over)
            raise Forbidden(f'pods "{pod.metadata.name}" is forbidden: exceeded quota: {quota.metadata.name}, '
                            f"requested: {requested}, used: {in_use}, limited: {limited}")


def quota_status(quota: core_pb2.ResourceQuota, used: dict[str, Decimal]) -> core_pb2.ResourceQuota:
    """The quota with status.hard and status.used as `kctl describe quota` shows them."""
    updated = core_pb2.ResourceQuota()
    updated.CopyFrom(quota)
    updated.status.hard.clear()
    updated.status.hard.update(quota.spec.hard)
    updated.status.used.clear()
    for key in quota.spec.hard:
        counted = QUOTA_KEYS.get(key)
        if counted is not None:
            updated.status.used[key] = _show(counted, used.get(counted, Decimal(0)))
    return updated

