"""What a PodDisruptionBudget means, shared by the eviction subresource and the disruption controller.

Kubernetes keeps these in pkg/apis/policy/helper and its listers: which budgets
cover a pod, and the `DisruptionAllowed` condition both writers of a budget's
status keep in step with `disruptionsAllowed` (the controller when it recounts,
the eviction subresource when it spends the last allowed disruption). Pure
functions over API messages; neither side reads storage through them.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from proto import core_pb2, meta_pb2, policy_pb2, selectors
from proto.errors import BadRequest

DISRUPTION_ALLOWED = "DisruptionAllowed"
# The condition's reasons (k8s.io/api/policy/v1).
SUFFICIENT_PODS = "SufficientPods"
INSUFFICIENT_PODS = "InsufficientPods"
SYNC_FAILED = "SyncFailed"
# An eviction the controller has not seen carried out stops counting after this long (DeletionTimeout).
DELETION_TIMEOUT = 120.0


def selector(pdb: policy_pb2.PodDisruptionBudget) -> selectors.LabelSelector:
    """The budget's pods: a null selector selects none, an empty one every pod of the namespace."""
    return selectors.from_message(pdb.spec.selector if pdb.spec.HasField("selector") else None)


def covers(pdb: policy_pb2.PodDisruptionBudget, pod: core_pb2.Pod) -> bool:
    """Whether the budget (in the pod's namespace) selects the pod; a malformed selector selects nothing."""
    if pdb.metadata.namespace != pod.metadata.namespace:
        return False
    try:
        return selector(pdb).matches(pod.metadata.labels)
    except BadRequest:
        return False


def budgets_for(pod: core_pb2.Pod, pdbs: Iterable[policy_pb2.PodDisruptionBudget]
                ) -> list[policy_pb2.PodDisruptionBudget]:
    """The budgets covering `pod` (GetPodPodDisruptionBudgets), in the order given."""
    return [pdb for pdb in pdbs if covers(pdb, pod)]


def is_healthy(pod: core_pb2.Pod) -> bool:
    """Healthy is Ready (IsPodReady), as both the controller and the eviction subresource judge it."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def set_condition(status: policy_pb2.PodDisruptionBudgetStatus, condition: meta_pb2.Condition,
                  now: Timestamp) -> None:
    """apimeta.SetStatusCondition: replace the condition of its type; the transition time moves with the status."""
    for existing in status.conditions:
        if existing.type == condition.type:
            if existing.status != condition.status or not existing.HasField("last_transition_time"):
                existing.status = condition.status
                existing.last_transition_time.CopyFrom(now)
            existing.reason, existing.message = condition.reason, condition.message
            existing.observed_generation = condition.observed_generation
            return
    added = status.conditions.add()
    added.CopyFrom(condition)
    added.last_transition_time.CopyFrom(now)


def update_disruption_allowed_condition(status: policy_pb2.PodDisruptionBudgetStatus, now: Timestamp) -> None:
    """DisruptionAllowed True (SufficientPods) while disruptions are allowed, else False (InsufficientPods)."""
    allowed = status.disruptions_allowed > 0
    set_condition(status, meta_pb2.Condition(
        type=DISRUPTION_ALLOWED, status="True" if allowed else "False",
        reason=SUFFICIENT_PODS if allowed else INSUFFICIENT_PODS,
        observed_generation=status.observed_generation), now)


def conditions_up_to_date(pdb: policy_pb2.PodDisruptionBudget) -> bool:
    """Whether DisruptionAllowed already says what disruptionsAllowed does, for this generation."""
    cond = next((c for c in pdb.status.conditions if c.type == DISRUPTION_ALLOWED), None)
    if cond is None or pdb.status.observed_generation != pdb.metadata.generation:
        return False
    if pdb.status.disruptions_allowed > 0:
        return cond.status == "True" and cond.reason == SUFFICIENT_PODS
    return cond.status == "False" and cond.reason == INSUFFICIENT_PODS
