"""The disruption controller: each PodDisruptionBudget's status says how many pods may go now.

As Kubernetes' pkg/controller/disruption, for every budget it looks at the pods
the budget selects and writes

    expectedPods     how many pods there should be
    desiredHealthy   the fewest healthy pods the budget allows
    currentHealthy   selected pods that are Ready, not terminating and not just evicted
    disruptionsAllowed = currentHealthy - desiredHealthy  (0 when negative, or with no expected pods)

and the `DisruptionAllowed` condition (True/SufficientPods, else False/InsufficientPods).
The eviction subresource spends disruptionsAllowed one eviction at a time; this
controller gives it back as replacements turn Ready.

How many pods there should be follows Kubernetes' rules:

- minAvailable as a number: the selected pods are the expected ones, and the number is
  the desired healthy count;
- minAvailable as a percent, or maxUnavailable: the expected count is the sum of the
  scales of the pods' controllers, found through the owner chain (a ReplicaSet's
  Deployment, else the ReplicaSet, or any kind with a scale subresource, so
  StatefulSets count as soon as they are served), and the percent is rounded up.
  Pods without a controller are left out (with an `UnmanagedPods` warning); a pod
  whose controller has no scale (a Job's) makes the budget fail safe: no disruptions,
  condition reason SyncFailed with the error.

`status.disruptedPods` lists pods the eviction subresource allowed to go: they do not
count as healthy until the controller sees them terminating, or until 2 minutes have
passed (then the pod was not deleted after all: a `NotDeleted` warning, and the entry
is dropped; the budget is synced again when the first entry would expire).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from client import Client, Informer, InformerFactory, key_of
from client.controller import Controller, copy
from client.events import NORMAL, WARNING, EventRecorder
from controlplane import disruptionbudget
from controlplane.controllers import podutil
from proto import core_pb2, kinds, meta_pb2, policy_pb2
from proto.errors import ApiError, Conflict, NotFound

log = logging.getLogger(__name__)

Now = Callable[[], float]


class DisruptionError(Exception):
    """The budget cannot be computed (a controller without scale, a bad percent): it fails safe."""


@dataclass(frozen=True)
class Expectation:
    """What the budget's pods should be: expectedPods, desiredHealthy, and pods nobody controls."""

    expected: int
    desired_healthy: int
    unmanaged: tuple[str, ...] = ()


def scaled_value(value: str, total: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent, rounding up: "50%" of 3 is 2."""
    if value.lstrip("-").isdigit():
        return int(value)
    if value.endswith("%") and value[:-1].isdigit():
        return math.ceil(int(value[:-1]) * total / 100)
    raise DisruptionError(f"invalid value for IntOrString: invalid type: string is not a percentage: {value!r}")


def _seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def _timestamp(at: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


def count_healthy(pods: list[core_pb2.Pod], disrupted: dict[str, Timestamp], now: float) -> int:
    """Ready pods that are neither terminating nor recently evicted (countHealthyPods)."""
    healthy = 0
    for pod in pods:
        if pod.metadata.HasField("deletion_timestamp"):
            continue
        evicted = disrupted.get(pod.metadata.name)
        if evicted is not None and _seconds(evicted) + disruptionbudget.DELETION_TIMEOUT > now:
            continue
        if disruptionbudget.is_healthy(pod):
            healthy += 1
    return healthy


class DisruptionController(Controller):
    name = "disruption"

    def __init__(self, client: Client, factory: InformerFactory, recorder: EventRecorder, *, workers: int = 2,
                 now: Now = time.time) -> None:
        super().__init__(client, factory, workers=workers)
        self.recorder = recorder
        self.now = now
        self.pdbs = factory.informer(policy_pb2.PodDisruptionBudget)
        self.pods = factory.informer(core_pb2.Pod)
        # Every kind with a scale a pod's owner chain may lead to (ReplicaSet, Deployment, and
        # StatefulSet once served): read only, no handlers, as Kubernetes' listers.
        self.scalable: dict[str, Informer[Any]] = {k.kind: factory.informer(k.message)
                                                   for k in kinds.KINDS if k.scalable}
        self.informers = [self.pdbs, self.pods, *self.scalable.values()]
        self.pdbs.add_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                              on_delete=self._enqueue)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)

    # ---------------------------------------------------------------- handlers: only keys

    def _enqueue(self, pdb: policy_pb2.PodDisruptionBudget) -> None:
        self.queue.add(key_of(pdb))

    def _budget_for(self, pod: core_pb2.Pod) -> policy_pb2.PodDisruptionBudget | None:
        """The budget covering `pod`; with several, the first, and a warning on the pod (getPdbForPod)."""
        budgets = disruptionbudget.budgets_for(pod, self.pdbs.store.list_by_namespace(pod.metadata.namespace))
        if not budgets:
            return None
        if len(budgets) > 1:
            self.recorder.event(pod, WARNING, "MultiplePodDisruptionBudgets",
                                f'Pod "{pod.metadata.namespace}"/"{pod.metadata.name}" matches multiple '
                                f'PodDisruptionBudgets.  Chose "{budgets[0].metadata.name}" arbitrarily.')
        return budgets[0]

    def _pod_changed(self, pod: core_pb2.Pod) -> None:
        pdb = self._budget_for(pod)
        if pdb is not None:
            self._enqueue(pdb)

    def _pod_updated(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        self._pod_changed(new)
        if old.metadata.labels != new.metadata.labels:
            self._pod_changed(old)  # it may have left a budget

    # ---------------------------------------------------------------- sync

    async def sync(self, key: str) -> None:
        pdb = self.pdbs.store.get(key)
        if pdb is None:
            return
        try:
            await self._try_sync(key, pdb)
        except (Conflict, NotFound):
            raise  # a newer budget (or none): the next event syncs it, without failing safe
        except (ApiError, DisruptionError) as err:
            log.warning("failed to sync PodDisruptionBudget %s: %s", key, err)
            await self._fail_safe(pdb, err)

    def _pods_of(self, pdb: policy_pb2.PodDisruptionBudget) -> list[core_pb2.Pod]:
        chosen = disruptionbudget.selector(pdb)
        return [p for p in self.pods.store.list_by_namespace(pdb.metadata.namespace)
                if chosen.matches(p.metadata.labels)]

    async def _try_sync(self, key: str, pdb: policy_pb2.PodDisruptionBudget) -> None:
        pods = self._pods_of(pdb)
        if not pods:
            self.recorder.event(pdb, NORMAL, "NoPods", "No matching pods found")
        try:
            expectation = self.expectation(pdb, pods)
        except (ApiError, DisruptionError) as err:
            self.recorder.event(pdb, WARNING, "CalculateExpectedPodCountFailed",
                                f"Failed to calculate the number of expected pods: {err}")
            raise
        if expectation.unmanaged:
            self.recorder.event(pdb, WARNING, "UnmanagedPods",
                                "Pods selected by this PodDisruptionBudget (selector: "
                                f"{disruptionbudget.selector(pdb)}) were found to be unmanaged. As a result, the "
                                "status of the PDB cannot be calculated correctly, which may result in undefined "
                                'behavior. To account for these pods please set ".spec.minAvailable" field of the '
                                "PDB to an integer value.")
        now = self.now()
        disrupted, recheck = self._disrupted_pods(pdb, pods, now)
        healthy = count_healthy(pods, disrupted, now)
        await self._update_status(pdb, healthy, expectation, disrupted)
        if recheck is not None:
            self.queue.add_after(key, recheck - now)

    # ---------------------------------------------------------------- how many pods there should be

    def expectation(self, pdb: policy_pb2.PodDisruptionBudget, pods: list[core_pb2.Pod]) -> Expectation:
        """expectedPods and desiredHealthy, by Kubernetes' rules (getExpectedPodCount)."""
        spec = pdb.spec
        if spec.max_unavailable:
            expected, unmanaged = self._expected_scale(pods)
            desired = max(expected - scaled_value(spec.max_unavailable, expected), 0)
            return Expectation(expected, desired, unmanaged)
        if spec.min_available.lstrip("-").isdigit():
            return Expectation(len(pods), int(spec.min_available))
        if spec.min_available:
            expected, unmanaged = self._expected_scale(pods)
            return Expectation(expected, scaled_value(spec.min_available, expected), unmanaged)
        return Expectation(0, 0)

    def _expected_scale(self, pods: list[core_pb2.Pod]) -> tuple[int, tuple[str, ...]]:
        """The sum of the scales of the pods' controllers, and the pods without one (getExpectedScale)."""
        scales: dict[str, int] = {}
        unmanaged: list[str] = []
        for pod in pods:
            ref = podutil.controller_ref(pod)
            if ref is None:
                unmanaged.append(pod.metadata.name)
                continue
            if ref.uid in scales:
                continue
            found = self._controller_scale(ref, pod.metadata.namespace)
            if found is None:
                raise DisruptionError(f'found no controllers for pod "{pod.metadata.name}"')
            uid, replicas = found
            scales[uid] = replicas
        return sum(scales.values()), tuple(unmanaged)

    def _scaled(self, kind: str, namespace: str, ref: meta_pb2.OwnerReference) -> Any:
        """The cached object `ref` names, if it is that very object (same uid)."""
        obj = self.scalable[kind].store.get_by_name(namespace, ref.name) if kind in self.scalable else None
        return obj if obj is not None and obj.metadata.uid == ref.uid else None

    def _controller_scale(self, ref: meta_pb2.OwnerReference, namespace: str) -> tuple[str, int] | None:
        """(uid, replicas) of the workload owning a pod through `ref`: a ReplicaSet's Deployment
        first, else the controller's own scale; None when it is gone or another object."""
        if ref.kind == "ReplicaSet":
            rs = self._scaled("ReplicaSet", namespace, ref)
            owner = podutil.controller_ref(rs) if rs is not None else None
            if owner is not None and owner.kind == "Deployment":
                deployment = self._scaled("Deployment", namespace, owner)
                if deployment is not None:
                    return deployment.metadata.uid, deployment.spec.replicas
        try:
            kind = kinds.for_kind(ref.api_version, ref.kind)
        except NotFound as err:
            raise DisruptionError(str(err)) from None
        if not kind.scalable:
            raise DisruptionError(f"{kind.qualified_resource} does not implement the scale subresource")
        controller = self._scaled(kind.kind, namespace, ref)
        return (controller.metadata.uid, controller.spec.replicas) if controller is not None else None

    # ---------------------------------------------------------------- status

    def _disrupted_pods(self, pdb: policy_pb2.PodDisruptionBudget, pods: list[core_pb2.Pod], now: float
                        ) -> tuple[dict[str, Timestamp], float | None]:
        """The evictions still pending, and when the earliest of them expires (buildDisruptedPodMap).

        An entry goes once its pod is terminating or gone, or 2 minutes after the eviction.
        """
        kept: dict[str, Timestamp] = {}
        recheck: float | None = None
        for pod in pods:
            evicted = pdb.status.disrupted_pods.get(pod.metadata.name)
            if evicted is None or pod.metadata.HasField("deletion_timestamp"):
                continue
            expires = _seconds(evicted) + disruptionbudget.DELETION_TIMEOUT
            if expires < now:
                self.recorder.event(pod, WARNING, "NotDeleted",
                                    f"Pod was expected by PDB {pdb.metadata.namespace}/{pdb.metadata.name} to be "
                                    "deleted but it wasn't")
                continue
            kept[pod.metadata.name] = evicted
            recheck = expires if recheck is None else min(recheck, expires)
        return kept, recheck

    async def _update_status(self, pdb: policy_pb2.PodDisruptionBudget, healthy: int, expectation: Expectation,
                             disrupted: dict[str, Timestamp]) -> None:
        # No expected pods means a budget whose pods this controller has not seen yet: allow nothing.
        allowed = healthy - expectation.desired_healthy
        if expectation.expected <= 0 or allowed <= 0:
            allowed = 0
        status = pdb.status
        if (status.current_healthy == healthy and status.desired_healthy == expectation.desired_healthy
                and status.expected_pods == expectation.expected and status.disruptions_allowed == allowed
                and dict(status.disrupted_pods) == disrupted
                and status.observed_generation == pdb.metadata.generation
                and disruptionbudget.conditions_up_to_date(pdb)):
            return
        new = copy(pdb)
        conditions = list(new.status.conditions)
        new.ClearField("status")
        new.status.current_healthy = healthy
        new.status.desired_healthy = expectation.desired_healthy
        new.status.expected_pods = expectation.expected
        new.status.disruptions_allowed = allowed
        for name, evicted in disrupted.items():
            new.status.disrupted_pods[name].CopyFrom(evicted)
        new.status.observed_generation = pdb.metadata.generation
        new.status.conditions.extend(conditions)
        disruptionbudget.update_disruption_allowed_condition(new.status, _timestamp(self.now()))
        await self._write(new)

    async def _fail_safe(self, pdb: policy_pb2.PodDisruptionBudget, err: Exception) -> None:
        """Allow no disruption while the budget cannot be computed, saying why (SyncFailed)."""
        new = copy(pdb)
        new.status.disruptions_allowed = 0
        disruptionbudget.set_condition(new.status, meta_pb2.Condition(
            type=disruptionbudget.DISRUPTION_ALLOWED, status="False", reason=disruptionbudget.SYNC_FAILED,
            message=str(err), observed_generation=new.status.observed_generation), _timestamp(self.now()))
        if new.status != pdb.status:
            await self._write(new)

    async def _write(self, pdb: Message) -> None:
        try:
            await self.client.update_status(pdb)
        except NotFound:
            pass  # deleted meanwhile
