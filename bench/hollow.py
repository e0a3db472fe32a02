"""Hollow nodes: Node objects with capacity and a Ready condition, and no kubelet behind them.

Kubemark's idea, for the scheduler's tests and benchmark: the scheduler only
reads Node objects, so registering them through the API (create, then the
status subresource, as a kubelet would) gives it a cluster of any size on one
machine. Pods bound to a hollow node never run. Also builds the pods those
tests create, with resource requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from client import Client
from proto import core_pb2
from proto.wellknown import LABEL_HOSTNAME


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: int = 110,
         labels: Mapping[str, str] | None = None, taints: Iterable[tuple[str, str, str]] = (),
         unschedulable: bool = False, ready: str = "True") -> core_pb2.Node:
    """A Node message; `taints` are (key, value, effect); `ready` is the Ready condition's status."""
    obj = core_pb2.Node(api_version="v1", kind="Node")
    obj.metadata.name = name
    obj.metadata.labels.update({LABEL_HOSTNAME: name, **(labels or {})})
    obj.spec.unschedulable = unschedulable
    for key, value, effect in taints:
        obj.spec.taints.add(key=key, value=value, effect=effect)
    for resources in (obj.status.capacity, obj.status.allocatable):
        resources.update({"cpu": cpu, "memory": memory, "pods": str(pods)})
    obj.status.conditions.add(type="Ready", status=ready, reason="HollowNode",
                              message="hollow node: no kubelet")
    obj.status.phase = "Running"
    return obj


async def register(client: Client, obj: core_pb2.Node) -> core_pb2.Node:
    """Create the node, then write its status through the status subresource as a kubelet does."""
    created = await client.create(obj)
    created.status.CopyFrom(obj.status)
    return await client.update_status(created)


async def register_all(client: Client, nodes: Iterable[core_pb2.Node], *, concurrency: int = 32) -> int:
    """Register many nodes, `concurrency` at a time; returns how many."""
    gate = asyncio.Semaphore(concurrency)

    async def one(obj: core_pb2.Node) -> None:
        async with gate:
            await register(client, obj)

    todo = list(nodes)
    await asyncio.gather(*(one(n) for n in todo))
    return len(todo)


def pod(name: str, namespace: str, *, cpu: str = "", memory: str = "", scheduler_name: str = "",
        labels: Mapping[str, str] | None = None, node_selector: Mapping[str, str] | None = None,
        priority: int | None = None) -> core_pb2.Pod:
    """A one-container pod requesting `cpu` and `memory` (unset: no request)."""
    obj = core_pb2.Pod(api_version="v1", kind="Pod")
    obj.metadata.name, obj.metadata.namespace = name, namespace
    obj.metadata.labels.update(labels or {})
    container = obj.spec.containers.add(name="app", image="registry.k8s.io/pause:3.9")
    if cpu:
        container.resources.requests["cpu"] = cpu
    if memory:
        container.resources.requests["memory"] = memory
    if scheduler_name:
        obj.spec.scheduler_name = scheduler_name
    obj.spec.node_selector.update(node_selector or {})
    if priority is not None:
        obj.spec.priority = priority
    return obj
