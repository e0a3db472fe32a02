"""The scheduling queue: which pending pod to decide next, and when to try a failed one again.

Every pending pod is in exactly one of three places (kube-scheduler's
PriorityQueue):

- the **active queue**, a heap ordered by priority (spec.priority, higher
  first) and then arrival, which `pop()` takes from;
- the **backoff queue**: pods whose attempt failed wait
  `initial * 2^(attempts-1)` seconds (capped) before they are active again, so
  one hopeless pod cannot monopolise the loop;
- the **unschedulable pods**: pods no node could take. Trying them again is
  pointless until the cluster changes, so they wait for `move_all()` — called
  when a node is added or changes in a way that matters, or a bound pod is
  deleted — which sends them to the backoff queue (or straight to the active
  queue when their back-off has passed). As a safety net, a pod parked longer
  than `max_unschedulable` seconds is retried anyway.

A pod being decided is *in flight*. If the cluster changed while it was (a node
appeared mid-decision), a failure sends it to backoff instead of parking it,
so the change is not missed; likewise if the pod itself was updated.

Why not the shared `WorkQueue`: its order is first-in-first-out and its only
delay is per-key back-off; scheduling needs priority order and a parking state
left on cluster events. The contract is the same — keys in, a worker pops a
key and reports the outcome — and keys, not pods, are queued: the loop reads
the pod from the informer's store when it pops it, so it always sees the latest.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass

ACTIVE, BACKOFF, UNSCHEDULABLE, IN_FLIGHT = "active", "backoff", "unschedulable", "in-flight"


@dataclass
class QueuedPod:
    key: str
    priority: int
    arrival: int  # order of first arrival: ties in priority go oldest first
    attempts: int = 0
    where: str = ACTIVE
    token: int = 0  # the heap entry that is current; older ones are skipped (lazy deletion)
    cycle: int = 0  # the scheduling cycle that popped it
    dirty: bool = False  # updated while in flight
    parked_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


class SchedulingQueue:
    def __init__(self, *, initial_backoff: float, max_backoff: float, max_unschedulable: float = 60.0) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable = max_unschedulable
        self._pods: dict[str, QueuedPod] = {}
        self._heap: list[tuple[int, int, int, str]] = []
        self._arrivals = itertools.count()
        self._tokens = itertools.count()
        self._ready = asyncio.Event()
        self.scheduling_cycle = 0
        self._move_cycle = -1  # the last cycle during which the cluster changed

    def __len__(self) -> int:
        return len(self._pods)

    def where(self, key: str) -> str | None:
        pod = self._pods.get(key)
        return pod.where if pod else None

    # ---------------------------------------------------------------- informer events

    def add(self, key: str, priority: int = 0) -> None:
        """A pending pod was added or updated."""
        pod = self._pods.get(key)
        if pod is None:
            pod = QueuedPod(key, priority, next(self._arrivals))
            self._pods[key] = pod
            self._push(pod)
        elif pod.where == IN_FLIGHT:
            pod.dirty = True
        elif pod.where == UNSCHEDULABLE:
            # Its spec may have changed what fits (a new toleration): try again.
            pod.priority = priority
            self._requeue(pod)
        elif pod.where == ACTIVE and pod.priority != priority:
            pod.priority = priority
            self._push(pod)

    def delete(self, key: str) -> None:
        """The pod was deleted or bound: it is no longer pending."""
        pod = self._pods.pop(key, None)
        if pod is not None and pod.timer is not None:
            pod.timer.cancel()

    def move_all(self) -> None:
        """The cluster changed in a way that may make parked pods fit: give them another go."""
        self._move_cycle = self.scheduling_cycle
        for pod in list(self._pods.values()):
            if pod.where == UNSCHEDULABLE:
                self._requeue(pod)

    # ---------------------------------------------------------------- the scheduling loop

    async def pop(self) -> str:
        """The next pod to decide, waiting for one; the caller reports back with one of the methods below."""
        while True:
            while self._heap:
                _, _, token, key = heapq.heappop(self._heap)
                pod = self._pods.get(key)
                if pod is None or pod.where != ACTIVE or pod.token != token:
                    continue  # deleted, moved or re-pushed since this entry was made
                self.scheduling_cycle += 1
                pod.where, pod.cycle, pod.dirty = IN_FLIGHT, self.scheduling_cycle, False
                pod.attempts += 1
                return key
            self._ready.clear()
            await self._ready.wait()

    def done(self, key: str) -> None:
        """The pod was decided (assumed on a node) or needs no decision: forget it."""
        self.delete(key)

    def add_unschedulable(self, key: str) -> None:
        """No node fits: park the pod until the cluster changes (unless it already did)."""
        pod = self._pods.get(key)
        if pod is None:
            return
        if pod.dirty or self._move_cycle >= pod.cycle:
            self._backoff(pod)
        else:
            pod.where = UNSCHEDULABLE
            pod.parked_at = asyncio.get_running_loop().time()

    def add_backoff(self, key: str, priority: int = 0) -> None:
        """The attempt failed for another reason (an error, a refused Binding): retry after back-off."""
        pod = self._pods.get(key)
        if pod is None:
            pod = QueuedPod(key, priority, next(self._arrivals), attempts=1)
            self._pods[key] = pod
        self._backoff(pod)

    def flush_unschedulable(self) -> None:
        """Retry pods parked for longer than max_unschedulable (a change may have gone unnoticed)."""
        now = asyncio.get_running_loop().time()
        for pod in list(self._pods.values()):
            if pod.where == UNSCHEDULABLE and now - pod.parked_at >= self.max_unschedulable:
                self._requeue(pod)

    # ---------------------------------------------------------------- moves

    def backoff_seconds(self, attempts: int) -> float:
        return min(self.initial_backoff * 2 ** max(0, min(attempts - 1, 30)), self.max_backoff)

    def _push(self, pod: QueuedPod) -> None:
        pod.where = ACTIVE
        pod.token = next(self._tokens)
        heapq.heappush(self._heap, (-pod.priority, pod.arrival, pod.token, pod.key))
        self._ready.set()

    def _backoff(self, pod: QueuedPod) -> None:
        pod.where = BACKOFF
        if pod.timer is not None:
            pod.timer.cancel()
        delay = self.backoff_seconds(pod.attempts)
        pod.timer = asyncio.get_running_loop().call_later(delay, self._backoff_done, pod.key)

    def _backoff_done(self, key: str) -> None:
        pod = self._pods.get(key)
        if pod is not None and pod.where == BACKOFF:
            pod.timer = None
            self._push(pod)

    def _requeue(self, pod: QueuedPod) -> None:
        """Out of the parking lot: active if its back-off has passed, else wait the remainder."""
        elapsed = asyncio.get_running_loop().time() - pod.parked_at
        remaining = self.backoff_seconds(pod.attempts) - elapsed
        if remaining <= 0:
            self._push(pod)
        else:
            pod.where = BACKOFF
            if pod.timer is not None:
                pod.timer.cancel()
            pod.timer = asyncio.get_running_loop().call_later(remaining, self._backoff_done, pod.key)
