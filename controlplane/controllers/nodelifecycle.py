"""The node lifecycle controller: notices dead nodes, taints them, and evicts their pods.

Every kubelet renews a Lease named after its node in `kube-node-lease` (every
10 s). Every `--node-monitor-period` this controller looks at each node: when
its Lease has not been renewed for `--node-monitor-grace-period` (by *this*
process's clock, measured from when it last saw renewTime change, so clock skew
cannot kill a node), the node's conditions become Unknown, a NodeNotReady event
is recorded, and the node gets the NoExecute taint
`node.kubernetes.io/unreachable` (a node reporting Ready=False gets
`node.kubernetes.io/not-ready`). When the kubelet is back and reports Ready, the
taints go. A node reporting DiskPressure, MemoryPressure or PIDPressure gets the
matching NoSchedule taint (`node.kubernetes.io/disk-pressure`, ...) while the
condition holds, as Kubernetes' TaintNodesByCondition: new pods go elsewhere.

The taint manager half (a work queue of node names) evicts the pods on a node
with NoExecute taints they do not tolerate: at once for ordinary taints; for
the not-ready/unreachable ones after the pod's `tolerationSeconds`, or
`--pod-eviction-timeout` (300 s, what Kubernetes' DefaultTolerationSeconds
admission gives every pod) when it has no such toleration. Evicted pods are
deleted, so their ReplicaSets create replacements on healthy nodes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from client import Client, InformerFactory, field_index
from client.controller import Controller, copy
from client.events import NORMAL, EventRecorder
from proto import coordination_pb2, core_pb2
from proto.errors import ApiError, Conflict, NotFound
from proto.wellknown import (
    TAINT_NODE_DISK_PRESSURE,
    TAINT_NODE_MEMORY_PRESSURE,
    TAINT_NODE_NOT_READY,
    TAINT_NODE_PID_PRESSURE,
    TAINT_NODE_UNREACHABLE,
)

# TaintNodesByCondition: a node reporting one of these conditions True gets the NoSchedule taint, so no new
# pod goes there unless it tolerates it (daemon pods do); the taint goes when the condition clears.
CONDITION_TAINTS = {"DiskPressure": TAINT_NODE_DISK_PRESSURE, "MemoryPressure": TAINT_NODE_MEMORY_PRESSURE,
                    "PIDPressure": TAINT_NODE_PID_PRESSURE}

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
NODE_NAME_INDEX = "spec.nodeName"


def tolerates(toleration: core_pb2.Toleration, taint: core_pb2.Taint) -> bool:
    """Kubernetes' ToleratesTaint: effect, key and (for Equal) value must match."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.operator == "Exists":
        return not toleration.key or toleration.key == taint.key
    return toleration.key == taint.key and toleration.value == taint.value


def eviction_time(pod: core_pb2.Pod, taints: list[core_pb2.Taint], default_seconds: float,
                  first_seen: float) -> float:
    """When `pod` must leave a node with these NoExecute taints (inf: it tolerates them for good)."""
    due = math.inf
    for taint in taints:
        added = taint.time_added.seconds + taint.time_added.nanos / 1e9 if taint.HasField("time_added") \
            else first_seen
        matching = [t for t in pod.spec.tolerations if tolerates(t, taint)]
        if not matching:
            # Unreachable/not-ready get the default grace; any other NoExecute taint evicts now.
            grace = default_seconds if taint.key in (TAINT_NODE_UNREACHABLE, TAINT_NODE_NOT_READY) else 0.0
        elif any(not t.HasField("toleration_seconds") for t in matching):
            continue
        else:
            grace = float(max(0, min(t.toleration_seconds for t in matching)))
        due = min(due, added + grace)
    return due


class NodeLifecycleController(Controller):
    name = "nodelifecycle"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 monitor_period: float = 5.0, grace_period: float = 40.0, eviction_timeout: float = 300.0,
                 workers: int = 4) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.monitor_period = monitor_period
        self.grace_period = grace_period
        self.eviction_timeout = eviction_timeout
        self.nodes = factory.informer(core_pb2.Node)
        self.leases = factory.informer(coordination_pb2.Lease, NODE_LEASE_NAMESPACE)
        self.pods = factory.informer(core_pb2.Pod)
        self.pods.store.add_index(NODE_NAME_INDEX, field_index("spec.nodeName"))
        self.informers = [self.nodes, self.leases, self.pods]
        # node -> (last renewTime seen, our monotonic time when it changed)
        self._probes: dict[str, tuple[str, float]] = {}
        self._first_seen: dict[str, float] = {}
        self.nodes.add_handler(on_add=self._node_changed, on_update=lambda _o, n: self._node_changed(n))
        self.pods.add_handler(on_add=self._pod_changed, on_update=lambda _o, n: self._pod_changed(n))

    # ---------------------------------------------------------------- handlers

    def _node_changed(self, node: core_pb2.Node) -> None:
        if any(t.effect == "NoExecute" for t in node.spec.taints):
            self.queue.add(node.metadata.name)

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        if pod.spec.node_name:
            node = self.nodes.store.get(pod.spec.node_name)
            if node is not None and any(t.effect == "NoExecute" for t in node.spec.taints):
                self.queue.add(pod.spec.node_name)

    # ---------------------------------------------------------------- health monitor

    async def run(self) -> None:
        await asyncio.gather(*(informer.wait_synced() for informer in self.informers))
        monitor = asyncio.create_task(self._monitor_forever(), name="node-monitor")
        try:
            await super().run()
        finally:
            monitor.cancel()

    async def _monitor_forever(self) -> None:
        while True:
            for node in self.nodes.store.list():
                try:
                    await self.monitor_node(node)
                except (Conflict, NotFound) as err:
                    log.debug("node %s changed while being checked: %s", node.metadata.name, err)
                except ApiError as err:  # the apiserver away: the next round tries again
                    log.warning("node %s: health check failed: %s", node.metadata.name, err)
            await asyncio.sleep(self.monitor_period)

    async def monitor_node(self, node: core_pb2.Node) -> None:
        name = node.metadata.name
        now = time.monotonic()
        lease = self.leases.store.get_by_name(NODE_LEASE_NAMESPACE, name)
        ready = next((c for c in node.status.conditions if c.type == "Ready"), None)
        probe = lease.spec.renew_time.ToJsonString() if lease is not None and lease.spec.HasField("renew_time") \
            else (ready.last_heartbeat_time.ToJsonString() if ready is not None else "")
        seen = self._probes.get(name)
        if seen is None or seen[0] != probe:
            # A node seen for the first time gets a whole grace period from now.
            self._probes[name] = seen = (probe, now)
        stale = now - seen[1] > self.grace_period
        if stale and (ready is None or ready.status != "Unknown"):
            node = await self._mark_unknown(node)
            ready = next((c for c in node.status.conditions if c.type == "Ready"), None)
        want: str | None = None
        if stale or ready is None or ready.status == "Unknown":
            want = TAINT_NODE_UNREACHABLE
        elif ready.status == "False":
            want = TAINT_NODE_NOT_READY
        await self._reconcile_taints(node, want)

    async def _mark_unknown(self, node: core_pb2.Node) -> core_pb2.Node:
        new = copy(node)
        if not any(c.type == "Ready" for c in new.status.conditions):
            new.status.conditions.add(type="Ready")
        for cond in new.status.conditions:
            if cond.status != "Unknown":
                cond.last_transition_time.GetCurrentTime()
            cond.status = "Unknown"
            cond.reason = "NodeStatusUnknown"
            cond.message = "Kubelet stopped posting node status."
        updated = await self.client.update_status(new)
        log.info("node %s stopped renewing its lease: Ready=Unknown", node.metadata.name)
        self.recorder.event(node, NORMAL, "NodeNotReady", f"Node {node.metadata.name} status is now: NodeNotReady")
        return updated

    async def _reconcile_taints(self, node: core_pb2.Node, want: str | None) -> None:
        """Our taints as they should be: `want` NoExecute (unreachable/not-ready) and the conditions' NoSchedule."""
        wanted = {(want, "NoExecute")} if want else set()
        if want != TAINT_NODE_UNREACHABLE:  # Unknown conditions say nothing about pressure
            wanted |= {(CONDITION_TAINTS[cond.type], "NoSchedule") for cond in node.status.conditions
                       if cond.status == "True" and cond.type in CONDITION_TAINTS}
        ours = {(TAINT_NODE_UNREACHABLE, "NoExecute"), (TAINT_NODE_NOT_READY, "NoExecute"),
                *((taint, "NoSchedule") for taint in CONDITION_TAINTS.values())}
        have = {(t.key, t.effect) for t in node.spec.taints if (t.key, t.effect) in ours}
        if have == wanted:
            return
        new = copy(node)
        kept = [t for t in new.spec.taints if (t.key, t.effect) not in ours or (t.key, t.effect) in wanted]
        del new.spec.taints[:]
        new.spec.taints.extend(kept)
        for key, effect in sorted(wanted - have):
            added = new.spec.taints.add(key=key, effect=effect)
            added.time_added.GetCurrentTime()
        await self.client.update(new)
        log.info("node %s: taints %s", node.metadata.name,
                 ", ".join(f"{k}:{e}" for k, e in sorted(wanted)) or "removed")

    # ---------------------------------------------------------------- taint manager

    async def sync(self, name: str) -> None:
        node = self.nodes.store.get(name)
        if node is None:
            self._probes.pop(name, None)
            return
        taints = [t for t in node.spec.taints if t.effect == "NoExecute"]
        if not taints:
            self._first_seen.pop(name, None)
            return
        now = time.time()
        first_seen = self._first_seen.setdefault(name, now)
        next_due = math.inf
        for pod in self.pods.store.list_by_index(NODE_NAME_INDEX, name):
            if pod.metadata.HasField("deletion_timestamp"):
                continue
            due = eviction_time(pod, taints, self.eviction_timeout, first_seen)
            if due <= now:
                await self._evict(pod)
            else:
                next_due = min(next_due, due)
        if next_due < math.inf:
            self.queue.add_after(name, next_due - now + 0.05)

    async def _evict(self, pod: core_pb2.Pod) -> None:
        try:
            await self.client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace, uid=pod.metadata.uid)
        except (NotFound, Conflict):
            return
        log.info("evicted pod %s/%s from tainted node %s", pod.metadata.namespace, pod.metadata.name,
                 pod.spec.node_name)
        self.recorder.event(pod, NORMAL, "TaintManagerEviction",
                            f"Marking for deletion Pod {pod.metadata.namespace}/{pod.metadata.name}")
