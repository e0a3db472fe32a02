"""The DaemonSet controller's decisions, as pure functions of the objects (Kubernetes' pkg/controller/daemon/util).

- Which nodes want a daemon pod (`should_run`): the template's nodeSelector and
  required node affinity must match the node, and its taints must be tolerated —
  judged with the daemon pod's *automatic tolerations* added, the ones every
  DaemonSet pod gets (`add_daemon_tolerations`): a node that is not ready,
  unreachable, under disk, memory or PID pressure, or cordoned still runs its
  daemons (kube-proxy, log shippers, CNI agents are what make it healthy again).
  A NoSchedule taint the pod does not tolerate keeps a new pod off the node but
  lets a running one stay; an untolerated NoExecute taint removes it.
- How a daemon pod is placed (`new_pod`): not by setting nodeName, but through
  the scheduler, with a required node affinity `matchFields metadata.name In
  [<node>]`, so the scheduler's resource, port and volume checks still apply and
  preemption could make room; `target_node` reads that node back from a pod not
  yet bound.
- Which pods a rolling update replaces next (`plan_rolling_update`): node by node,
  never more than maxUnavailable nodes without an available daemon pod, or with
  maxSurge, the new pod started beside the old one, which goes once the new one
  is available.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controlplane.controllers import podutil
from controlplane.controllers.history import LABEL_CONTROLLER_REVISION_HASH
from controlplane.scheduler.nodeinfo import PodInfo, matches_node_selector, matches_required_affinity, tolerated
from proto import apps_pb2, core_pb2
from proto.wellknown import (
    TAINT_NODE_DISK_PRESSURE,
    TAINT_NODE_MEMORY_PRESSURE,
    TAINT_NODE_NETWORK_UNAVAILABLE,
    TAINT_NODE_NOT_READY,
    TAINT_NODE_PID_PRESSURE,
    TAINT_NODE_UNREACHABLE,
    TAINT_NODE_UNSCHEDULABLE,
)

NODE_NAME_FIELD = "metadata.name"  # the one field a NodeSelectorRequirement in matchFields may name

# (key, effect) of the tolerations every daemon pod gets (operator Exists, no tolerationSeconds).
DAEMON_TOLERATIONS: tuple[tuple[str, str], ...] = (
    (TAINT_NODE_NOT_READY, "NoExecute"),
    (TAINT_NODE_UNREACHABLE, "NoExecute"),
    (TAINT_NODE_DISK_PRESSURE, "NoSchedule"),
    (TAINT_NODE_MEMORY_PRESSURE, "NoSchedule"),
    (TAINT_NODE_PID_PRESSURE, "NoSchedule"),
    (TAINT_NODE_UNSCHEDULABLE, "NoSchedule"),
)
# Only a pod on the host's network can run before the node's pod network is up.
HOST_NETWORK_TOLERATION = (TAINT_NODE_NETWORK_UNAVAILABLE, "NoSchedule")


def add_daemon_tolerations(spec: core_pb2.PodSpec) -> None:
    """Add the automatic daemon tolerations the spec does not already carry."""
    wanted = [*DAEMON_TOLERATIONS, *([HOST_NETWORK_TOLERATION] if spec.host_network else [])]
    for key, effect in wanted:
        if not any(t.key == key and t.effect == effect and t.operator == "Exists" for t in spec.tolerations):
            spec.tolerations.add(key=key, operator="Exists", effect=effect)


def daemon_pod_spec(ds: apps_pb2.DaemonSet) -> core_pb2.Pod:
    """The pod the DaemonSet would run, before it is given a node: what `should_run` judges."""
    pod = core_pb2.Pod()
    pod.metadata.labels.update(ds.spec.template.metadata.labels)
    pod.spec.CopyFrom(ds.spec.template.spec)
    add_daemon_tolerations(pod.spec)
    return pod


@dataclass(frozen=True)
class Placement:
    """`should_run`: place a daemon pod here; `should_continue_running`: let an existing one stay."""

    should_run: bool
    should_continue_running: bool


def should_run(pod: PodInfo, node: core_pb2.Node) -> Placement:
    """Kubernetes' nodeShouldRunDaemonPod for the daemon pod `pod` (built by `daemon_pod_spec`)."""
    labels = dict(node.metadata.labels)
    if not matches_node_selector(pod, labels) or not matches_required_affinity(pod, node.metadata.name, labels):
        return Placement(False, False)
    untolerated = [t for t in node.spec.taints if t.effect in ("NoSchedule", "NoExecute")
                   and not tolerated(pod.tolerations, t.key, t.value, t.effect)]
    if not untolerated:
        return Placement(True, True)
    # A NoSchedule taint keeps new pods off; only NoExecute evicts the one already there.
    return Placement(False, not any(t.effect == "NoExecute" for t in untolerated))


def target_node(pod: core_pb2.Pod) -> str:
    """The node a daemon pod is for: its nodeName once bound, else its matchFields node affinity."""
    if pod.spec.node_name:
        return pod.spec.node_name
    required = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    for term in required.node_selector_terms:
        for req in term.match_fields:
            if req.key == NODE_NAME_FIELD and req.operator == "In" and len(req.values) == 1:
                return str(req.values[0])
    return ""


def set_target_node(spec: core_pb2.PodSpec, node_name: str) -> None:
    """Pin the pod to `node_name` through the scheduler (ReplaceDaemonSetPodNodeNameNodeAffinity).

    The required node affinity becomes the single term `metadata.name In [node]`: the
    controller has already checked the template's own terms against this node.
    """
    required = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    del required.node_selector_terms[:]
    term = required.node_selector_terms.add()
    term.match_fields.add(key=NODE_NAME_FIELD, operator="In", values=[node_name])


def new_pod(ds: apps_pb2.DaemonSet, template_hash: str, node_name: str) -> core_pb2.Pod:
    """The daemon pod of the current template for `node_name`, owned by `ds`."""
    template = ds.spec.template
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.generate_name = f"{ds.metadata.name}-"
    pod.metadata.namespace = ds.metadata.namespace
    pod.metadata.labels.update(template.metadata.labels)
    pod.metadata.labels[LABEL_CONTROLLER_REVISION_HASH] = template_hash
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.spec.CopyFrom(template.spec)
    add_daemon_tolerations(pod.spec)
    set_target_node(pod.spec, node_name)
    podutil.set_controller(pod, ds)
    return pod


def is_updated(pod: core_pb2.Pod, template_hash: str) -> bool:
    return pod.metadata.labels.get(LABEL_CONTROLLER_REVISION_HASH) == template_hash


def is_terminating(pod: core_pb2.Pod) -> bool:
    return pod.metadata.HasField("deletion_timestamp")


def by_age(pods: Iterable[core_pb2.Pod]) -> list[core_pb2.Pod]:
    """Oldest first; on a tie, running before pending (podByCreationTimestampAndPhase)."""
    return sorted(pods, key=lambda p: (p.metadata.creation_timestamp.ToNanoseconds(),
                                       p.status.phase != "Running", p.metadata.name))


def updated_and_old(pods: Iterable[core_pb2.Pod], template_hash: str
                    ) -> tuple[core_pb2.Pod | None, core_pb2.Pod | None, bool]:
    """(the new pod, the old pod, ok) on one node, ignoring terminating pods (findUpdatedPodsOnNode).

    Not ok when the node has two new or two old pods: the manage step must clean it up first.
    """
    new: core_pb2.Pod | None = None
    old: core_pb2.Pod | None = None
    for pod in pods:
        if is_terminating(pod):
            continue
        if is_updated(pod, template_hash):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def _resolve(value: str, total: int) -> int:
    """An int-or-percent against `total`, percentages rounded up (as the DaemonSet controller does)."""
    if value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value or 0)


def surge_and_unavailable(ds: apps_pb2.DaemonSet, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as node counts; both zero would never progress, so unavailable becomes 1."""
    rolling = ds.spec.update_strategy.rolling_update
    surge = _resolve(rolling.max_surge, desired)
    unavailable = _resolve(rolling.max_unavailable or "1", desired)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def allows_surge(ds: apps_pb2.DaemonSet) -> bool:
    rolling = ds.spec.update_strategy.rolling_update
    return ds.spec.update_strategy.type == "RollingUpdate" and rolling.max_surge not in ("", "0", "0%")


@dataclass
class RollingPlan:
    """What one rolling-update step does: old pods to delete and nodes to start a new pod on."""

    delete: list[core_pb2.Pod] = field(default_factory=list)
    create_on: list[str] = field(default_factory=list)


def plan_rolling_update(ds: apps_pb2.DaemonSet, wanted: Iterable[str], node_pods: Mapping[str, list[core_pb2.Pod]],
                        template_hash: str, now: float | None = None) -> RollingPlan:
    """The next step of a RollingUpdate over the nodes in `wanted` (those that should run the pod).

    Without maxSurge, old pods are deleted (the manage step then creates the new
    ones) while fewer than maxUnavailable nodes lack an available daemon pod; an
    old pod that is not available anyway may always go. With maxSurge, a new pod
    is started beside the old on up to maxSurge nodes at a time, and each old pod
    is deleted once its node's new pod is available.
    """
    now = time.time() if now is None else now
    nodes = list(wanted)
    surge, max_unavailable = surge_and_unavailable(ds, len(nodes))
    min_ready = ds.spec.min_ready_seconds
    plan = RollingPlan()

    def available(pod: core_pb2.Pod) -> bool:
        return podutil.is_available(pod, min_ready, now)

    if surge == 0:
        unavailable = 0
        candidates: list[core_pb2.Pod] = []
        for name in nodes:
            new, old, ok = updated_and_old(node_pods.get(name, []), template_hash)
            if not ok or (new is None) == (old is None):
                unavailable += 1  # no pod yet, or two: the manage step is on it
            elif new is not None:
                unavailable += 0 if available(new) else 1
            elif old is not None and not available(old):
                plan.delete.append(old)  # replacing what does not serve costs nothing
            elif old is not None and unavailable < max_unavailable:
                candidates.append(old)
        room = min(max(max_unavailable - unavailable, 0), len(candidates))
        plan.delete += candidates[:room]
        return plan
    surging = 0
    surge_candidates: list[str] = []
    for name in nodes:
        new, old, ok = updated_and_old(node_pods.get(name, []), template_hash)
        if not ok:
            surging += 1
        elif old is None:
            continue  # nothing old here; the manage step creates a missing pod
        elif new is None:
            if not available(old):
                plan.create_on.append(name)
            elif surging < surge:
                surge_candidates.append(name)
        elif not available(new):
            surging += 1  # waiting for the new pod to become available
        else:
            plan.delete.append(old)
    room = min(max(surge - surging, 0), len(surge_candidates))
    plan.create_on += surge_candidates[:room]
    return plan


def surplus_on_node(ds: apps_pb2.DaemonSet, running: list[core_pb2.Pod], template_hash: str,
                    now: float | None = None) -> list[core_pb2.Pod]:
    """Which of a node's running daemon pods must go: all but one, or with surge an old one kept
    only while the new one is not yet available."""
    ordered = by_age(running)
    if not allows_surge(ds):
        return ordered[1:]
    surplus: list[core_pb2.Pod] = []
    oldest_new: core_pb2.Pod | None = None
    oldest_old: core_pb2.Pod | None = None
    for pod in ordered:
        if is_updated(pod, template_hash) and oldest_new is None:
            oldest_new = pod
        elif not is_updated(pod, template_hash) and oldest_old is None:
            oldest_old = pod
        else:
            surplus.append(pod)
    if oldest_new is not None and oldest_old is not None and (
            not podutil.is_ready(oldest_old)
            or podutil.is_available(oldest_new, ds.spec.min_ready_seconds, now)):
        surplus.append(oldest_old)
    return surplus
