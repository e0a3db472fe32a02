"""Strategies of the core ("" group, v1) kinds with rules of their own: Pod, Service, Namespace, ResourceQuota.

The Pod strategy owns the status/spec split of a new pod and graceful deletion
of bound pods (the kubelet stops the containers, then deletes with grace 0),
and `bind` is the pods/binding subresource's rule. The Service strategy keeps
allocated clusterIPs and node ports across updates and takes and gives them back
around writes. The Namespace strategy makes deletion a phase (Terminating) that
the namespace controller finishes, and keeps NamespaceLifecycle's cache current.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import StoreContext, Strategy
from controlplane.apiserver.validation import core as validation
from controlplane.apiserver.validation.field import Errors
from controlplane.apiserver.validation.meta import is_dns1035_label, is_dns1123_label
from proto import core_pb2
from proto.errors import Conflict
from proto.kinds import Kind


def _now_seconds() -> int:
    return int(time.time())


class PodStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        # A pod may carry nodeName at create (static placement), but its status is the kubelet's.
        obj.ClearField("status")
        obj.status.phase = "Pending"  # type: ignore[attr-defined]

    def default(self, obj: Message) -> None:
        defaults.default_pod(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_pod(obj, old)  # type: ignore[arg-type]

    def begin_graceful_delete(self, obj: Message, grace_period: int | None) -> bool:
        """A bound pod waits for its kubelet for the grace period (the pod's own unless the delete says)."""
        pod: Any = obj
        if not pod.spec.node_name:
            return False
        meta = pod.metadata
        grace = pod.spec.termination_grace_period_seconds if grace_period is None else grace_period
        if meta.HasField("deletion_timestamp"):
            # A second delete may only shorten the grace period, as in Kubernetes.
            grace = min(grace, meta.deletion_grace_period_seconds)
        if grace > 0:
            meta.deletion_timestamp.FromSeconds(_now_seconds() + grace)
            meta.deletion_grace_period_seconds = grace
            return True
        meta.deletion_grace_period_seconds = 0
        return False

    def held(self, obj: Message) -> bool:
        """A bound pod with a grace period stays until its kubelet deletes it with grace 0."""
        pod: Any = obj
        return bool(pod.spec.node_name) and pod.metadata.deletion_grace_period_seconds > 0


def bind(pod: core_pb2.Pod, binding: core_pb2.Binding) -> None:
    """pods/binding: the scheduler's decision, accepted exactly once per pod."""
    name = pod.metadata.name
    if binding.metadata.uid and binding.metadata.uid != pod.metadata.uid:
        raise Conflict(f'Precondition failed: UID in precondition: {binding.metadata.uid}, '
                       f'UID in object meta: {pod.metadata.uid}')
    if pod.metadata.HasField("deletion_timestamp"):
        raise Conflict(f"pod {name} is being deleted, cannot be assigned to a host")
    if pod.spec.node_name:
        raise Conflict(f"pod {name} is already assigned to node \"{pod.spec.node_name}\"")
    pod.spec.node_name = binding.target.name
    _set_pod_condition(pod, "PodScheduled", "True")


def _set_pod_condition(pod: core_pb2.Pod, type_: str, status: str) -> None:
    for cond in pod.status.conditions:
        if cond.type == type_:
            if cond.status != status:
                cond.status = status
                cond.last_transition_time.FromSeconds(_now_seconds())
            return
    cond = pod.status.conditions.add(type=type_, status=status)
    cond.last_transition_time.FromSeconds(_now_seconds())


class ServiceStrategy(Strategy):
    def name_rule(self, name: str) -> list[str]:
        return is_dns1035_label(name)  # the name becomes a DNS label under the cluster domain

    def prepare_for_update(self, kind: Kind, new: Message, old: Message) -> None:
        super().prepare_for_update(kind, new, old)
        _keep_service_allocations(new, old)  # type: ignore[arg-type]

    def default(self, obj: Message) -> None:
        defaults.default_service(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_service(obj, old)  # type: ignore[arg-type]

    @asynccontextmanager
    async def allocations(self, ctx: StoreContext, new: Message, old: Message | None) -> AsyncIterator[None]:
        """Take the clusterIP and node ports newly needed; give them back if the write fails, and the
        dropped ones once it succeeds."""
        allocation = await ctx.allocator.allocate(new, old)  # type: ignore[arg-type]
        try:
            yield
        except BaseException:
            await ctx.allocator.release_keys(allocation.keys)
            raise
        if old is not None:
            await ctx.allocator.release(old, keep=new)  # type: ignore[arg-type]

    async def after_delete(self, ctx: StoreContext, obj: Message) -> None:
        await ctx.allocator.release(obj)  # type: ignore[arg-type]


def _keep_service_allocations(new: core_pb2.Service, old: core_pb2.Service) -> None:
    """An update that leaves allocated fields empty keeps them, as `kubectl apply` expects.

    clusterIP and node ports are assigned once; a manifest re-applied without
    them means "unchanged", not "release". A move to ClusterIP drops node ports.
    """
    if not new.spec.cluster_ip and new.spec.type != "ExternalName":
        new.spec.cluster_ip = old.spec.cluster_ip
        new.spec.cluster_ips[:] = old.spec.cluster_ips
    if new.spec.type in ("NodePort", "LoadBalancer"):
        allocated = {(p.port, p.protocol or "TCP"): p.node_port for p in old.spec.ports}
        for port in new.spec.ports:
            if not port.node_port:
                port.node_port = allocated.get((port.port, port.protocol or "TCP"), 0)
    else:
        for port in new.spec.ports:
            port.node_port = 0


class NamespaceStrategy(Strategy):
    def name_rule(self, name: str) -> list[str]:
        return is_dns1123_label(name)

    def prepare_for_update(self, kind: Kind, new: Message, old: Message) -> None:
        new.status.CopyFrom(old.status)  # type: ignore[attr-defined]

    def default(self, obj: Message) -> None:
        defaults.default_namespace(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_namespace(obj, old)  # type: ignore[arg-type]

    def begin_graceful_delete(self, obj: Message, grace_period: int | None) -> bool:
        """Deletion is a phase: the namespace controller empties it, then removes the "kubernetes" finalizer."""
        ns: Any = obj
        ns.status.phase = "Terminating"
        if not ns.metadata.HasField("deletion_timestamp"):
            ns.metadata.deletion_timestamp.FromSeconds(_now_seconds())
            ns.metadata.deletion_grace_period_seconds = 0
        return bool(ns.spec.finalizers)

    def held(self, obj: Message) -> bool:
        return bool(obj.spec.finalizers)  # type: ignore[attr-defined]

    async def after_write(self, ctx: StoreContext, obj: Message) -> None:
        ctx.observe_namespace("MODIFIED", obj)

    async def after_delete(self, ctx: StoreContext, obj: Message) -> None:
        ctx.observe_namespace("DELETED", obj)


class ResourceQuotaStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        # status.hard mirrors spec.hard from the start; ResourceQuota admission fills status.used.
        quota: Any = obj
        quota.status.hard.clear()
        quota.status.hard.update(quota.spec.hard)
