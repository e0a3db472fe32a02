"""The eviction manager: the kubelet keeps its node's disk from filling up by ending pods.

Kubernetes' pkg/kubelet/eviction for ephemeral storage, in the same shape. Every
`eviction_monitoring_period` (`synchronize`):

1. Per-pod limits, whatever the node's state (localStorageEviction): a pod whose
   containers, logs and emptyDirs together use more than its containers'
   `limits.ephemeral-storage` add up to, or one container (writable layer and
   logs) more than its own limit, is evicted. (An emptyDir over its sizeLimit is
   the volume manager's check, made in the pod's sync: volumes/manager.py.)
2. The thresholds (`--eviction-hard`, diskpressure.py): those crossed now, and
   those crossed before that have not yet got back their
   `--eviction-minimum-reclaim`. While any is, and for
   `--eviction-pressure-transition-period` after, the node is under DiskPressure:
   its condition says so (node.py asks `disk_pressure`) and no new pod is
   admitted (`admit`) unless it is critical.
3. With a threshold crossed, node-level resources go first: the exited
   containers of pods that have finished (their writable layers), then unused
   images (the image GC manager). If that brings every threshold back, with its
   minimum reclaim, no pod is touched.
4. Otherwise one pod is evicted, ranked as Kubernetes ranks pods for disk: those
   using more than they requested first, then the lowest priority, then the
   largest use beyond the request (`rank_for_disk`). Critical pods (priority class
   system-node-critical or system-cluster-critical, or a priority of 2000000000
   and more) and static ones are passed over. The manager waits for the pod to be
   cleaned up, then looks again at once: one pod per round, never a stampede.

Evicting is the pod worker's job, so no pod is ever handled by two hands: the
manager notes why (`requested`) and queues the pod's key; the worker's sync kills
the containers at once (grace period 0, as for any hard threshold), frees the
pod's volumes and writes phase Failed, reason Evicted and the message, with a
Warning event `Evicted`, in Kubernetes' words:

    The node was low on resource: ephemeral-storage. Threshold quantity: 150Mi, available: 97280Ki.
    Container app was using 40Mi, request is 1Mi, has larger consumption of ephemeral-storage.

A pod refused at admission is Failed with reason Evicted and the message `Pod was
rejected: The node had condition: [DiskPressure]. `.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from client import Client
from client.informer import Store
from nodeagent.kubelet import status as podstatus
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.diskpressure import (
    Observation,
    PressureTracker,
    Threshold,
    crossed,
    observe,
    parse_eviction_hard,
)
from nodeagent.kubelet.imagegc import ImageGCManager
from nodeagent.kubelet.podstorage import (
    EPHEMERAL_STORAGE,
    PodUsage,
    binary,
    canonical,
    container_request,
    container_request_text,
    measure,
    pod_limit,
    pod_request,
)
from nodeagent.kubelet.runtime import LABEL_POD_UID, CRIError, Runtime, RuntimePod
from nodeagent.kubelet.volumes import Volumes
from proto import core_pb2, cri_pb2
from proto.errors import ApiError
from proto.quantity import parse_quantity, quantity_format

log = logging.getLogger(__name__)

REASON = "Evicted"
NODE_LOW_MESSAGE = "The node was low on resource: {resource}. "
THRESHOLD_MET_MESSAGE = "Threshold quantity: {quantity}, available: {available}. "
CONTAINER_MESSAGE = "Container {name} was using {usage}, request is {request}, has larger consumption of {resource}. "
CONTAINER_LIMIT_MESSAGE = 'Container {name} exceeded its local ephemeral storage limit "{limit}". '
POD_LIMIT_MESSAGE = "Pod ephemeral local storage usage exceeds the total limit of containers {limit}. "
NODE_CONDITION_MESSAGE = "The node had condition: [DiskPressure]. "
REJECTED_PREFIX = "Pod was rejected: "

# Pods at or above this priority are critical (scheduling.SystemCriticalPriority), as the two
# built-in classes are; without a priority admission plugin the class name alone says so too.
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000
CRITICAL_PRIORITY_CLASSES = ("system-node-critical", "system-cluster-critical")
POD_CLEANUP_TIMEOUT = 30.0


# ---------------------------------------------------------------- pure rules


def is_critical(pod: core_pb2.Pod) -> bool:
    """Kubernetes' IsCriticalPod: static and mirror pods, and pods of system-critical priority."""
    annotations = pod.metadata.annotations
    if annotations.get("kubernetes.io/config.source", "api") != "api" or "kubernetes.io/config.mirror" in annotations:
        return True
    if pod.spec.HasField("priority") and pod.spec.priority >= SYSTEM_CRITICAL_PRIORITY:
        return True
    return pod.spec.priority_class_name in CRITICAL_PRIORITY_CLASSES


def priority(pod: core_pb2.Pod) -> int:
    return pod.spec.priority if pod.spec.HasField("priority") else 0


def rank_for_disk(pods: list[core_pb2.Pod], usage: dict[str, PodUsage]) -> list[core_pb2.Pod]:
    """The order to evict pods in for disk pressure (rankDiskPressureFunc): a pod with no figures first,
    then those using more than they requested, then lower priority before higher, then the largest use
    beyond the request first."""
    def order(pod: core_pb2.Pod) -> tuple[int, int, int]:
        used = usage.get(pod.metadata.uid)
        if used is None:
            return (0, priority(pod), 0)
        beyond = used.total - pod_request(pod)
        return (1 if beyond > 0 else 2, priority(pod), -beyond)
    return sorted(pods, key=order)


def threshold_quantity(threshold: Threshold, seen: Observation) -> str:
    """The threshold in bytes as the message shows it: a percentage of this filesystem, or the quantity given."""
    if threshold.value.endswith("%"):
        return binary(threshold.minimum(seen.capacity))
    return canonical(threshold.value)


def eviction_message(pod: core_pb2.Pod, used: PodUsage | None, threshold: Threshold, seen: Observation) -> str:
    """evictionMessage for ephemeral storage: the threshold, what is left, and each container over its request."""
    message = NODE_LOW_MESSAGE.format(resource=EPHEMERAL_STORAGE) + THRESHOLD_MET_MESSAGE.format(
        quantity=threshold_quantity(threshold, seen), available=binary(seen.available))
    if used is None:
        return message
    for spec in (*pod.spec.containers, *pod.spec.init_containers):
        container = used.containers.get(spec.name)
        if container is not None and container.total > container_request(spec):
            message += CONTAINER_MESSAGE.format(name=spec.name, usage=binary(container.total),
                                                request=container_request_text(spec), resource=EPHEMERAL_STORAGE)
    return message


def over_limit(pod: core_pb2.Pod, used: PodUsage) -> str | None:
    """Why the pod must go for its own limits (the pod's sum first, then each container's), or None."""
    limit = pod_limit(pod)
    if limit is not None and used.total > limit:
        first = next(c.resources.limits[EPHEMERAL_STORAGE] for c in (*pod.spec.containers, *pod.spec.init_containers)
                     if c.resources.limits.get(EPHEMERAL_STORAGE))
        # A sum of quantities keeps the first one's format, as resource.Quantity.Add does.
        return POD_LIMIT_MESSAGE.format(limit=binary(limit) if quantity_format(first) == "BinarySI"
                                        else canonical(str(limit)))
    for spec in pod.spec.containers:
        text = spec.resources.limits.get(EPHEMERAL_STORAGE)
        container = used.containers.get(spec.name)
        if text and container is not None and 0 < parse_quantity(text) < container.total:
            return CONTAINER_LIMIT_MESSAGE.format(name=spec.name, limit=canonical(text))
    return None


def rejected_status(pod: core_pb2.Pod, message: str) -> core_pb2.PodStatus:
    """The kubelet's rejectPod: Failed, the reason, the message; only the QoS class is kept."""
    return core_pb2.PodStatus(phase="Failed", reason=REASON, message=REJECTED_PREFIX + message,
                              qos_class=pod.status.qos_class)


# ---------------------------------------------------------------- the manager


class EvictionManager:
    """Watches the node's disk every monitoring period and evicts pods when it must; admits new pods."""

    def __init__(self, client: Client, runtime: Runtime, config: KubeletConfig, pods: Store[core_pb2.Pod], *,
                 volumes: Volumes, image_gc: ImageGCManager, enqueue: Callable[[str], None],
                 record: Callable[[core_pb2.Pod, str, str, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.runtime = runtime
        self.pods = pods
        self.volumes = volumes
        self.image_gc = image_gc
        self.enqueue = enqueue  # asks the pod workers to sync a pod ("namespace/name")
        self.record = record
        self.clock = clock
        self.root = config.root_dir
        self.period = config.eviction_monitoring_period
        self.thresholds = parse_eviction_hard(config.eviction_hard, config.eviction_minimum_reclaim)
        self.pressure = PressureTracker(self.thresholds, config.eviction_pressure_transition_period)
        self._observed = False
        self._requested: dict[str, str] = {}  # pod uid -> why it is to be evicted, until its worker has
        self._admitted: set[str] = set()
        self._rejected: set[str] = set()

    # ---------------------------------------------------------------- for the pod workers

    def requested(self, uid: str) -> str | None:
        """The eviction message when the manager chose this pod (the worker then evicts it), else None."""
        return self._requested.get(uid)

    async def admit(self, pod: core_pb2.Pod, rp: RuntimePod) -> bool:
        """The eviction admit handler, the first time the kubelet would start a pod: under DiskPressure only
        critical pods are admitted; the others are Failed with reason Evicted. A pod that has run here
        before (a restarted kubelet finds its sandbox) was admitted then."""
        uid = pod.metadata.uid
        if uid in self._admitted:
            return True
        if uid in self._rejected:
            return False
        if not self._observed:
            await self._observe()  # the kubelet just started: the pod workers may come before the first round
        if rp.sandboxes or rp.containers or not self.under_disk_pressure() or is_critical(pod):
            self._admitted.add(uid)
            return True
        log.warning("refusing pod %s/%s: %s", pod.metadata.namespace, pod.metadata.name, NODE_CONDITION_MESSAGE)
        await podstatus.update_pod_status(self.client, pod, rejected_status(pod, NODE_CONDITION_MESSAGE))
        self._rejected.add(uid)
        self.record(pod, "Warning", REASON, NODE_CONDITION_MESSAGE)
        return False

    # ---------------------------------------------------------------- for the node status

    def under_disk_pressure(self) -> bool:
        """A threshold is crossed, or was within the pressure transition period."""
        return self.pressure.under_pressure(self.clock())

    def disk_pressure(self) -> str:
        """The DiskPressure condition's detail: the threshold crossed ("nodefs.available<10%"), or "" for none."""
        return self.pressure.condition(self.clock())

    # ---------------------------------------------------------------- the control loop

    async def run(self) -> None:
        """synchronize every monitoring period; after an eviction, wait for the pod to be cleaned up and
        look again at once."""
        while True:
            evicted: list[core_pb2.Pod] = []
            try:
                evicted = await self.synchronize()
            except (CRIError, OSError, ApiError) as err:
                log.warning("eviction manager: %s", err)
            if evicted:
                await self._wait_for_cleanup(evicted)
            else:
                await asyncio.sleep(self.period)
            self._forget_gone()

    async def synchronize(self) -> list[core_pb2.Pod]:
        """One look at the node: the pods evicted (or asked to be) this round."""
        before = self.pressure.met
        seen, met = await self._observe()
        if met and not before:
            log.warning("disk eviction threshold crossed: %s (available %s)", met[0].describe(),
                        binary(seen[met[0].signal].available))

        active = await self._active_pods()
        usage = await measure(self.runtime, active, pod_dir=self.volumes.pod_dir, volume_path=self.volumes.path)
        over = [(pod, why) for pod in active if (why := over_limit(pod, usage[pod.metadata.uid])) is not None]
        evicted = [pod for pod, why in over if self._evict(pod, why)]
        if evicted or not met:
            return evicted

        if await self._reclaim_node_level(met):
            log.info("reclaimed node-level resources: no pod evicted this round")
            return []
        threshold = met[0]
        for pod in rank_for_disk(active, usage):
            if self._evict(pod, eviction_message(pod, usage.get(pod.metadata.uid), threshold,
                                                 seen[threshold.signal])):
                return [pod]
        log.warning("disk eviction threshold %s crossed, but no pod may be evicted", threshold.describe())
        return []

    async def _observe(self) -> tuple[dict[str, Observation], list[Threshold]]:
        """The filesystems now, and the thresholds that count as crossed."""
        seen = await asyncio.to_thread(observe, nodefs=self.root, imagefs=self.root)
        self._observed = True
        return seen, self.pressure.observe(seen, self.clock())

    async def _active_pods(self) -> list[core_pb2.Pod]:
        """Pods the eviction may consider: running here (a ready sandbox), not finished or being deleted,
        not already on their way out."""
        running = {s.labels.get(LABEL_POD_UID, "") for s in await self.runtime.list_pod_sandboxes()
                   if s.state == cri_pb2.SANDBOX_READY}
        return [p for p in self.pods.list()
                if p.metadata.uid in running and p.metadata.uid not in self._requested
                and not p.metadata.HasField("deletion_timestamp") and p.status.phase not in podstatus.TERMINAL_PHASES]

    def _evict(self, pod: core_pb2.Pod, message: str) -> bool:
        """Hand the pod to its worker to be evicted with `message`; False for a pod that must not be."""
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if is_critical(pod):
            log.info("eviction manager: not evicting critical pod %s", key)
            return False
        log.warning("evicting pod %s: %s", key, message)
        self._requested[pod.metadata.uid] = message
        self.enqueue(key)
        return True

    async def _reclaim_node_level(self, met: list[Threshold]) -> bool:
        """Free what no pod needs (exited containers of finished pods, then unused images); True when every
        threshold is back with its minimum reclaim, or when containers went this round: containerd frees
        their writable layers in its garbage collection, a moment later, so the next round looks again
        before a pod is evicted for space that is on its way back."""
        removed = await self._delete_unused_containers()
        seen = await asyncio.to_thread(observe, nodefs=self.root, imagefs=self.root)
        needed = max(t.minimum(seen[t.signal].capacity) + t.reclaim(seen[t.signal].capacity)
                     - seen[t.signal].available for t in met)
        if needed > 0:
            await self.image_gc.reclaim(needed)
            seen = await asyncio.to_thread(observe, nodefs=self.root, imagefs=self.root)
        return removed > 0 or not any(crossed(t, seen[t.signal], with_reclaim=True) for t in self.thresholds)

    async def _delete_unused_containers(self) -> int:
        """The container GC's DeleteAllUnusedContainers: exited containers of pods that will not run again
        go with their writable layers (their logs stay until the pod does). How many went."""
        finished = {p.metadata.uid for p in self.pods.list() if p.status.phase in podstatus.TERMINAL_PHASES}
        removed = 0
        for container in await self.runtime.list_containers():
            if container.state == cri_pb2.CONTAINER_EXITED and container.labels.get(LABEL_POD_UID) in finished:
                try:
                    await self.runtime.remove_container(container.id)
                    removed += 1
                except CRIError as err:
                    log.warning("removing container %s of a finished pod: %s", container.id[:12], err)
        return removed

    async def _wait_for_cleanup(self, pods: list[core_pb2.Pod]) -> None:
        """Until each evicted pod shows Failed (its worker has killed it and freed its volumes), or is gone;
        at most POD_CLEANUP_TIMEOUT."""
        poll = min(1.0, self.period)
        for _ in range(int(POD_CLEANUP_TIMEOUT / poll)):
            if all(self._cleaned_up(p) for p in pods):
                return
            await asyncio.sleep(poll)
        log.warning("eviction manager: timed out waiting for evicted pods to be cleaned up")

    def _cleaned_up(self, pod: core_pb2.Pod) -> bool:
        current = self.pods.get(f"{pod.metadata.namespace}/{pod.metadata.name}")
        return (current is None or current.metadata.uid != pod.metadata.uid
                or current.status.phase in podstatus.TERMINAL_PHASES)

    def _forget_gone(self) -> None:
        """Drop what is remembered of pods that finished or left the node."""
        live = {p.metadata.uid for p in self.pods.list() if p.status.phase not in podstatus.TERMINAL_PHASES}
        for uid in [u for u in self._requested if u not in live]:
            del self._requested[uid]
        known = {p.metadata.uid for p in self.pods.list()}
        self._admitted &= known
        self._rejected &= known
