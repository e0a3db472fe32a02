"""The ReplicaSet controller: keeps `spec.replicas` pods matching the selector alive.

For each ReplicaSet it counts the active pods it controls (through their
controller ownerReference), adopts matching orphans, releases pods whose labels
stopped matching, then creates or deletes the difference and writes
`status` (replicas, readyReplicas, availableReplicas after minReadySeconds).

- Creation is *slow start*: batches of 1, 2, 4, ... pods, stopping at the first
  failure, so a template the apiserver refuses costs one request, not 500.
- Deletion picks the cheapest pods first (unscheduled, then pending, not ready,
  recently ready, most restarted, newest), as Kubernetes' ActivePods ordering.
- `Expectations` keep a burst of creates from being doubled while the pod
  informer has not yet seen them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from client import Client, InformerFactory, key_of, split_key
from client.controller import Controller, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane.controllers import podutil
from controlplane.controllers.expectations import Expectations
from proto import apps_pb2, core_pb2, selectors
from proto.errors import ApiError, Conflict, NamespaceTerminating, NotFound

log = logging.getLogger(__name__)

BURST_REPLICAS = 500  # most pods created or deleted in one sync, as in Kubernetes
SLOW_START_INITIAL_BATCH = 1


class ReplicaSetController(Controller):
    name = "replicaset"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *,
                 workers: int = 5) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.expectations = Expectations()
        self.replicasets = factory.informer(apps_pb2.ReplicaSet)
        self.pods = factory.informer(core_pb2.Pod)
        self.informers = [self.replicasets, self.pods]
        self.replicasets.add_handler(on_add=self._enqueue_rs, on_update=lambda _o, n: self._enqueue_rs(n),
                                     on_delete=self._rs_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    # ---------------------------------------------------------------- handlers: only bookkeeping and keys

    def _enqueue_rs(self, rs: apps_pb2.ReplicaSet) -> None:
        self.queue.add(key_of(rs))

    def _rs_deleted(self, rs: apps_pb2.ReplicaSet) -> None:
        self.expectations.forget(key_of(rs))
        self.queue.add(key_of(rs))

    def _owner_key(self, pod: core_pb2.Pod) -> str | None:
        return podutil.controller_key(pod, "ReplicaSet", self.replicasets.store)

    def _enqueue_matching(self, pod: core_pb2.Pod) -> None:
        """An orphan changed: every ReplicaSet that might adopt it takes a look."""
        for key in podutil.selecting_owners(pod, self.replicasets.store):
            self.queue.add(key)

    def _pod_added(self, pod: core_pb2.Pod) -> None:
        if pod.metadata.HasField("deletion_timestamp"):
            self._pod_deleted(pod)  # seen for the first time already terminating (a relist)
            return
        owner = self._owner_key(pod)
        if owner is not None:
            self.expectations.creation_observed(owner)
            self.queue.add(owner)
        elif podutil.controller_ref(pod) is None:
            self._enqueue_matching(pod)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        if new.metadata.resource_version == old.metadata.resource_version:
            return  # a resync: the ReplicaSets resync on their own
        owner = self._owner_key(new)
        if new.metadata.HasField("deletion_timestamp") and not old.metadata.HasField("deletion_timestamp"):
            # A graceful delete: the pod no longer counts, so this is the deletion we waited for.
            if owner is not None:
                self.expectations.deletion_observed(owner, key_of(new))
        old_owner = self._owner_key(old)
        if old_owner is not None and old_owner != owner:
            self.queue.add(old_owner)
        if owner is not None:
            self.queue.add(owner)
            rs = self.replicasets.store.get(owner)
            if rs is not None and rs.spec.min_ready_seconds > 0 and podutil.is_ready(new) \
                    and not podutil.is_ready(old):
                # Available only minReadySeconds after it turned ready: look again then.
                self.queue.add_after(owner, rs.spec.min_ready_seconds + 0.5)
        elif podutil.controller_ref(new) is None and (
                old.metadata.labels != new.metadata.labels or podutil.controller_ref(old) is not None):
            self._enqueue_matching(new)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        owner = self._owner_key(pod)
        if owner is not None:
            self.expectations.deletion_observed(owner, key_of(pod))
            self.queue.add(owner)

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        namespace, _ = split_key(key)
        rs = self.replicasets.store.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        # Read the expectations *before* the pod list: pods that arrive in between
        # are then counted by the next sync, never missed by this one.
        satisfied = self.expectations.satisfied(key)
        selector = selectors.from_message(rs.spec.selector)
        candidates = [p for p in self.pods.store.list_by_namespace(namespace) if podutil.is_active(p)]
        pods = await self._claim_pods(rs, selector, candidates)
        if satisfied and not rs.metadata.HasField("deletion_timestamp"):
            await self._manage_replicas(key, rs, pods)
        await self._update_status(key, rs, pods)

    async def _claim_pods(self, rs: apps_pb2.ReplicaSet, selector: selectors.LabelSelector,
                          candidates: list[core_pb2.Pod]) -> list[core_pb2.Pod]:
        """The pods this ReplicaSet controls after adopting matching orphans and releasing strays."""
        owned: list[core_pb2.Pod] = []
        deleting = rs.metadata.HasField("deletion_timestamp")
        for pod in candidates:
            ref = podutil.controller_ref(pod)
            matches = selector.matches(pod.metadata.labels)
            if ref is not None and ref.uid == rs.metadata.uid:
                if matches:
                    owned.append(pod)
                else:
                    await podutil.patch_owner(self.client, pod, release=rs)
            elif ref is None and matches and not deleting:
                if await podutil.patch_owner(self.client, pod, adopt=rs):
                    owned.append(pod)
        return owned

    async def _manage_replicas(self, key: str, rs: apps_pb2.ReplicaSet, pods: list[core_pb2.Pod]) -> None:
        diff = len(pods) - rs.spec.replicas
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, count)
            created, error = await slow_start(count, lambda: self._create_pod(rs))
            if created < count:
                # The skipped and failed creates will never be observed: stop waiting for them.
                self.expectations.creation_observed(key, count - created)
                if isinstance(error, NamespaceTerminating):
                    return  # the namespace controller is deleting this ReplicaSet: nothing to retry
                raise ApiError(f"created only {created} of {count} pods for {key}: {error}")
        elif diff > 0:
            victims = sorted(pods, key=deletion_cost)[:min(diff, BURST_REPLICAS)]
            self.expectations.expect_deletions(key, [key_of(p) for p in victims])
            results = await asyncio.gather(*(self._delete_pod(key, rs, p) for p in victims),
                                           return_exceptions=True)
            for err in results:
                if isinstance(err, BaseException):
                    raise err

    async def _create_pod(self, rs: apps_pb2.ReplicaSet) -> None:
        pod = pod_from_template(rs.spec.template, rs)
        pod.metadata.namespace = rs.metadata.namespace
        try:
            created = await self.client.create(pod)
        except NamespaceTerminating:
            raise
        except ApiError as err:
            self.recorder.event(rs, WARNING, "FailedCreate", f"Error creating: {err}")
            raise
        self.recorder.event(rs, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}")

    async def _delete_pod(self, key: str, rs: apps_pb2.ReplicaSet, pod: core_pb2.Pod) -> None:
        try:
            await self.client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace,
                                     uid=pod.metadata.uid)
        except (NotFound, Conflict):
            # Already gone (or replaced by a namesake): no deletion event will come for it.
            self.expectations.deletion_observed(key, key_of(pod))
            return
        self.recorder.event(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}")

    async def _update_status(self, key: str, rs: apps_pb2.ReplicaSet, pods: list[core_pb2.Pod]) -> None:
        template_labels = rs.spec.template.metadata.labels
        status = apps_pb2.ReplicaSetStatus(
            replicas=len(pods),
            fully_labeled_replicas=sum(
                all(p.metadata.labels.get(k) == v for k, v in template_labels.items()) for p in pods),
            ready_replicas=sum(podutil.is_ready(p) for p in pods),
            available_replicas=sum(podutil.is_available(p, rs.spec.min_ready_seconds) for p in pods),
            observed_generation=rs.metadata.generation)
        status.conditions.extend(rs.status.conditions)
        if status != rs.status:
            new = copy(rs)
            new.status.CopyFrom(status)
            try:
                await self.client.update_status(new)
            except NotFound:
                return
        if rs.spec.min_ready_seconds > 0 and status.ready_replicas != status.available_replicas:
            self.queue.add_after(key, rs.spec.min_ready_seconds)


async def slow_start(count: int, create: Callable[[], Awaitable[None]]) -> tuple[int, BaseException | None]:
    """Call `create` `count` times in doubling batches; stop after a batch with a failure.

    Returns how many calls succeeded and the first failure (Kubernetes' slowStartBatch).
    """
    done, batch = 0, SLOW_START_INITIAL_BATCH
    while done < count:
        size = min(batch, count - done)
        results = await asyncio.gather(*(create() for _ in range(size)), return_exceptions=True)
        ok = sum(not isinstance(r, BaseException) for r in results)
        done += ok
        if ok < size:
            return done, next(r for r in results if isinstance(r, BaseException))
        batch *= 2
    return done, None


def pod_from_template(template: core_pb2.PodTemplateSpec, owner: apps_pb2.ReplicaSet) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.generate_name = f"{owner.metadata.name}-"
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.spec.CopyFrom(template.spec)
    podutil.set_controller(pod, owner)
    return pod


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_cost(pod: core_pb2.Pod) -> tuple[int, int, int, int, int, int]:
    """Sort key: the pod to delete first sorts first (Kubernetes' ActivePods ordering)."""
    ready = podutil.condition(pod, "Ready")
    ready_since = ready.last_transition_time.seconds if ready is not None and ready.status == "True" else 0
    restarts = sum(c.restart_count for c in pod.status.container_statuses)
    return (
        1 if pod.spec.node_name else 0,                   # unscheduled first
        _PHASE_RANK.get(pod.status.phase, 0),             # pending, unknown, then running
        1 if podutil.is_ready(pod) else 0,                # not ready first
        -ready_since,                                     # ready most recently first
        -restarts,                                        # most restarts first
        -pod.metadata.creation_timestamp.seconds,         # newest first
    )
