"""Admission: namespace policy applied to pods on create — LimitRange and ResourceQuota.

After defaults and before a pod is stored, two Kubernetes admission plugins:

- **LimitRanger** fills a container's missing requests and limits from the
  namespace's LimitRange (`defaultRequest`, `default`) and refuses one outside
  its `min`/`max`;
- **ResourceQuota** refuses a pod that would take the namespace past a quota's
  `hard` limits (pods, requests.cpu/memory, limits.cpu/memory), then records the
  new usage in the quota's status.

Quota usage is counted from the pods actually stored (running and pending;
finished pods no longer count), under a per-namespace lock held across the
check and the write, so concurrent creates cannot both squeeze past the limit.
That is exact with one apiserver, which is how Flotilla runs.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message

from proto import core_pb2, kinds
from proto.errors import Forbidden
from proto.quantity import format_bytes, format_milli, parse_quantity

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


class Admission:
    """Holds the namespaces' LimitRanges and ResourceQuotas, fed by the registry's watches."""

    def __init__(self) -> None:
        self.limit_ranges: dict[tuple[str, str], core_pb2.LimitRange] = {}
        self.quotas: dict[tuple[str, str], core_pb2.ResourceQuota] = {}
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def observe(self, event_type: str, obj: Message) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        table: dict[tuple[str, str], Any] = (
            self.limit_ranges if isinstance(obj, core_pb2.LimitRange) else self.quotas)
        if event_type == "DELETED":
            table.pop((meta.namespace, meta.name), None)
        else:
            table[(meta.namespace, meta.name)] = obj

    # ------------------------------------------------------------ LimitRanger

    def apply_limit_ranges(self, pod: core_pb2.Pod) -> None:
        """Fill missing requests/limits from the namespace's LimitRanges; refuse what breaks min/max."""
        ranges = [lr for (ns, _), lr in sorted(self.limit_ranges.items()) if ns == pod.metadata.namespace]
        for limit_range in ranges:
            for item in limit_range.spec.limits:
                if item.type not in ("", "Container"):
                    continue
                for container in pod.spec.containers:
                    self._limit_container(pod, container, item)

    @staticmethod
    def _limit_container(pod: core_pb2.Pod, container: core_pb2.Container, item: core_pb2.LimitRangeItem) -> None:
        res = container.resources
        for resource, value in item.default.items():
            if resource not in res.limits:
                res.limits[resource] = value
        for resource, value in item.default_request.items():
            if resource not in res.requests:
                res.requests[resource] = value
        for resource in item.default:
            # As Kubernetes: with only a default limit, the request defaults to the limit.
            if resource not in res.requests:
                res.requests[resource] = res.limits[resource]
        name = f'pods "{pod.metadata.name}"'
        for resource, bound in item.max.items():
            if resource in res.limits and parse_quantity(res.limits[resource]) > parse_quantity(bound):
                raise Forbidden(f"{name} is forbidden: maximum {resource} usage per Container is {bound}, "
                                f"but limit is {res.limits[resource]}")
            if resource not in res.limits:
                raise Forbidden(f"{name} is forbidden: maximum {resource} usage per Container is {bound}, "
                                "but no limit is specified")
        for resource, bound in item.min.items():
            if resource in res.requests and parse_quantity(res.requests[resource]) < parse_quantity(bound):
                raise Forbidden(f"{name} is forbidden: minimum {resource} usage per Container is {bound}, "
                                f"but request is {res.requests[resource]}")

    # ------------------------------------------------------------ ResourceQuota

    def _quotas_in(self, namespace: str) -> list[core_pb2.ResourceQuota]:
        return [q for (ns, _), q in sorted(self.quotas.items()) if ns == namespace]

    @asynccontextmanager
    async def quota_guard(self, pod: core_pb2.Pod, stored_pods: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]],
                          record: Callable[[core_pb2.ResourceQuota, dict[str, Decimal]], Awaitable[None]],
                          *, dry_run: bool = False) -> AsyncIterator[None]:
        """Hold the namespace's quota lock while `pod` is checked and stored; then record usage."""
        namespace = pod.metadata.namespace
        if not self._quotas_in(namespace):
            yield
            return
        async with self._locks[namespace]:
            used: dict[str, Decimal] = defaultdict(Decimal)
            for other in await stored_pods(namespace):
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
                await record(quota, after)

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


QUOTA_KIND = kinds.resolve("resourcequotas")
