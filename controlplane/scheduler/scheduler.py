"""The scheduler loop: take a pending pod, decide its node, assume it, bind it in the background.

    informers ──► handlers ──► SchedulingQueue ──► schedule_one ──► Framework.schedule (pure)
        │                                              │  fits: Cache.assume → bind task → Scheduled event
        └──────────────► Cache (nodes, bound pods)     └  fits nowhere: park pod, PodScheduled=False, event

Handlers do one thing each: a pending pod's key goes on the queue, a bound
pod into the cache, a node into the cache (and, if it could change a verdict,
parked pods back into line). `schedule_one` reads the pod from the informer
store and calls the framework synchronously — there is no await between
reading the cache and assuming the pod, so no other decision can see the
cache half-updated, and one task deciding at a time is what makes "the next
decision sees those resources" true.

Binding is the slow part (a round trip through the apiserver to etcd), so it
runs in the background, up to `parallelism` Bindings at once, while decisions
continue against the assumed state. A failed Binding forgets the assumption
and sends the pod to back-off. Restarting is safe: a new scheduler lists
every bound pod before it decides anything, and the apiserver accepts a
Binding once per pod, so a pod bound just before a crash is seen as bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from client import Client
from client.events import NORMAL, WARNING, EventRecorder
from client.informer import InformerFactory, key_of
from controlplane.scheduler import config as configuration
from controlplane.scheduler.cache import TERMINAL_PHASES, Cache
from controlplane.scheduler.framework import CycleState, FitError, Framework, Handle
from controlplane.scheduler.nodeinfo import PodInfo
from controlplane.scheduler.queue import SchedulingQueue
from proto import core_pb2
from proto.errors import ApiError, Conflict, NotFound

log = logging.getLogger(__name__)

SCHEDULER_COMPONENT = "default-scheduler"  # the source of its Events, as in Kubernetes
FLUSH_INTERVAL = 5.0  # how often parked pods are checked against max_unschedulable


@dataclass
class Metrics:
    """Counters for benches and logs; latencies are per decision (framework time only)."""

    attempts: int = 0
    scheduled: int = 0
    unschedulable: int = 0
    bind_failures: int = 0
    decision_seconds: list[float] = field(default_factory=list)


class Scheduler:
    def __init__(self, client: Client, config: configuration.SchedulerConfig | None = None, *,
                 node_selector: str = "", seed: int | None = None, record_latencies: bool = False) -> None:
        """`node_selector` (a label selector) limits the nodes this scheduler sees: tests and
        benches give each scheduler its own hollow nodes. A cluster's scheduler sees them all."""
        self.client = client
        self.config = config or configuration.SchedulerConfig()
        self.cache = Cache()
        self.queue = SchedulingQueue(initial_backoff=self.config.pod_initial_backoff,
                                     max_backoff=self.config.pod_max_backoff)
        self.factory = InformerFactory(client)
        handle = Handle(client, self.factory, self.queue.move_all)
        self.profiles: dict[str, Framework] = {
            p.scheduler_name: configuration.build_framework(p, handle, seed=seed) for p in self.config.profiles}
        self.pods = self.factory.informer(core_pb2.Pod)
        self.nodes = self.factory.informer(core_pb2.Node, label_selector=node_selector)
        # The controllers' recorder: events are queued and written by one background task,
        # so under a burst they wait (or are dropped) rather than slowing Bindings.
        self.recorder = EventRecorder(client, SCHEDULER_COMPONENT)
        self.metrics = Metrics()
        self.record_latencies = record_latencies
        self.synced = asyncio.Event()
        self._binds = asyncio.Semaphore(self.config.parallelism)
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- informer handlers

    def _responsible(self, pod: core_pb2.Pod) -> bool:
        return self._profile(pod) in self.profiles and not pod.metadata.HasField("deletion_timestamp")

    @staticmethod
    def _profile(pod: core_pb2.Pod) -> str:
        # The apiserver defaults schedulerName; a pod stored without one is the default's.
        return pod.spec.scheduler_name or configuration.DEFAULT_SCHEDULER_NAME

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        if pod.spec.node_name:
            self.cache.add_pod(pod)
            self.queue.delete(key_of(pod))
        elif self._responsible(pod):
            self.queue.add(key_of(pod), pod.spec.priority)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if new.spec.node_name:
            self.cache.update_pod(new)
            self.queue.delete(key_of(new))
            if new.status.phase in TERMINAL_PHASES and old.status.phase not in TERMINAL_PHASES:
                self.queue.move_all()  # a finished pod frees its requests
        elif self._responsible(new):
            if new.spec != old.spec or new.metadata.labels != old.metadata.labels:
                self.queue.add(key_of(new), new.spec.priority)
        else:
            self.queue.delete(key_of(new))

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        self.queue.delete(key_of(pod))
        if self.cache.counted(key_of(pod)) is not None:
            self.cache.remove_pod(pod)
            self.queue.move_all()

    def _node_added(self, node: core_pb2.Node) -> None:
        self.cache.add_node(node)
        self.queue.move_all()

    def _node_updated(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        if self.cache.update_node(old, new):
            self.queue.move_all()

    def _node_deleted(self, node: core_pb2.Node) -> None:
        self.cache.remove_node(node)

    # ---------------------------------------------------------------- running

    async def run(self) -> None:
        """Sync the caches, then schedule until cancelled."""
        self.nodes.add_handler(self._node_added, self._node_updated, self._node_deleted)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        self.factory.start()
        self.recorder.start()
        background = [asyncio.create_task(self._flush_forever(), name="flush-unschedulable")]
        try:
            # Nothing is decided before every bound pod is counted: that is what makes a
            # restarted scheduler safe against overcommitting.
            await self.factory.wait_for_cache_sync()
            log.info("caches synced: %d nodes, %d pods; scheduling", len(self.nodes.store), len(self.pods.store))
            self.synced.set()
            while True:
                key = await self.queue.pop()
                self.schedule_one(key)
                # Let informer handlers and bind tasks run between decisions.
                await asyncio.sleep(0)
        finally:
            self.factory.stop()
            self.recorder.stop()
            for task in [*background, *self._tasks]:
                task.cancel()
            await asyncio.gather(*background, *self._tasks, return_exceptions=True)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.queue.flush_unschedulable()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- one decision

    def schedule_one(self, key: str) -> None:
        pod = self.pods.store.get(key)
        if pod is None or pod.spec.node_name or not self._responsible(pod) or self.cache.counted(key):
            self.queue.done(key)  # gone, bound, not ours, or already assumed with its Binding in flight
            return
        framework = self.profiles[self._profile(pod)]
        info = PodInfo.from_pod(pod)
        state = CycleState()
        self.metrics.attempts += 1
        started = time.perf_counter()
        try:
            node_name = framework.schedule(state, info, self.cache.nodes)
        except FitError as err:
            self._observe(started)
            self.metrics.unschedulable += 1
            self.queue.add_unschedulable(key)
            self._spawn(self._record_unschedulable(pod, err.message()), f"unschedulable {key}")
            return
        self._observe(started)
        status = framework.run_reserve(state, info, node_name)
        if not status.success:
            self.queue.add_backoff(key)
            self.recorder.event(pod, WARNING, "FailedScheduling", status.message())
            return
        self.cache.assume(info, node_name)
        self.queue.done(key)
        self._spawn(self._bind(framework, state, info, pod, node_name), f"bind {key}")

    def _observe(self, started: float) -> None:
        if self.record_latencies:
            self.metrics.decision_seconds.append(time.perf_counter() - started)

    async def _bind(self, framework: Framework, state: CycleState, info: PodInfo, pod: core_pb2.Pod,
                    node_name: str) -> None:
        async with self._binds:
            status = await framework.run_bind(state, info, node_name)
        if status.success:
            self.metrics.scheduled += 1
            self.recorder.event(pod, NORMAL, "Scheduled",
                                 f"Successfully assigned {info.namespace}/{info.name} to {node_name}")
            return
        self.metrics.bind_failures += 1
        log.warning("binding %s to %s failed: %s", info.key, node_name, status.message())
        self.cache.forget(info.key)
        framework.run_unreserve(state, info, node_name)
        current = self.pods.store.get(info.key)
        if current is not None and not current.spec.node_name and current.metadata.uid == info.uid:
            self.queue.add_backoff(info.key, info.priority)
            self.recorder.event(pod, WARNING, "FailedScheduling", f"Binding rejected: {status.message()}")

    async def _record_unschedulable(self, pod: core_pb2.Pod, message: str) -> None:
        """PodScheduled=False (reason Unschedulable) on the pod, and a FailedScheduling event."""
        self.recorder.event(pod, WARNING, "FailedScheduling", message)
        for _attempt in range(3):
            current = next((c for c in pod.status.conditions if c.type == "PodScheduled"), None)
            if current is not None and (current.status, current.reason, current.message) == (
                    "False", "Unschedulable", message):
                return  # already says so: no write
            updated = core_pb2.Pod()
            updated.CopyFrom(pod)
            set_condition(updated, "PodScheduled", "False", "Unschedulable", message)
            try:
                await self.client.update_status(updated)
                return
            except NotFound:
                return
            except Conflict:
                # Someone wrote the pod meanwhile (maybe bound it): decide on the fresh copy.
                try:
                    pod = await self.client.get(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace)
                except ApiError:
                    return
                if pod.spec.node_name:
                    return
            except ApiError as err:
                log.warning("cannot set PodScheduled=False on %s: %s", key_of(pod), err)
                return


def set_condition(pod: core_pb2.Pod, kind: str, status: str, reason: str, message: str) -> None:
    """Set a pod condition, moving lastTransitionTime only when the status flips."""
    now = time.time_ns()
    for condition in pod.status.conditions:
        if condition.type == kind:
            if condition.status != status:
                condition.last_transition_time.FromNanoseconds(now)
            condition.status, condition.reason, condition.message = status, reason, message
            condition.last_probe_time.Clear()
            return
    condition = pod.status.conditions.add(type=kind, status=status, reason=reason, message=message)
    condition.last_transition_time.FromNanoseconds(now)
    if not pod.status.phase:
        pod.status.phase = "Pending"
