"""Describing apps/v1 workloads: a deployment (replica counts, strategy, pod template, conditions, old
and new ReplicaSets), a daemon set (nodes scheduled, up to date, available and misscheduled, its
pods by phase, its pod template) and a stateful set (replicas, update strategy and partition, pods
by phase, pod template, volume claim templates), as kubectl's DeploymentDescriber,
DaemonSetDescriber and StatefulSetDescriber."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.printers.apps import desired_replicas
from controlplane.printers.text import NONE, labels_text, selector_text
from kctl.describe.pods import containers
from kctl.describe.section import Section, annotation_lines, metadata, pairs
from proto import apps_pb2, core_pb2, kinds


def _rs_line(rs: apps_pb2.ReplicaSet) -> str:
    return f"{rs.metadata.name} ({rs.status.replicas}/{desired_replicas(rs.spec)} replicas created)"


def describe_deployment(dep: apps_pb2.Deployment, replicasets: Sequence[apps_pb2.ReplicaSet]) -> Section:
    s = Section()
    spec, status = dep.spec, dep.status
    metadata(s, dep, kinds.resolve("deployments"))
    s.kv(0, "Selector", selector_text(spec.selector))
    s.kv(0, "Replicas", f"{desired_replicas(spec)} desired | {status.updated_replicas} updated | "
                        f"{status.replicas} total | {status.available_replicas} available | "
                        f"{status.unavailable_replicas} unavailable")
    strategy = spec.strategy.type or "RollingUpdate"
    s.kv(0, "StrategyType", strategy)
    s.kv(0, "MinReadySeconds", spec.min_ready_seconds)
    if strategy == "RollingUpdate":
        ru = spec.strategy.rolling_update
        s.kv(0, "RollingUpdateStrategy", f"{ru.max_unavailable or '25%'} max unavailable, "
                                         f"{ru.max_surge or '25%'} max surge")
    s.header(0, "Pod Template:")
    s.many(1, "Labels", pairs(spec.template.metadata.labels))
    if spec.template.metadata.annotations:
        s.many(1, "Annotations", annotation_lines(spec.template.metadata.annotations))
    containers(s, 1, "Containers", spec.template.spec.containers, None)
    if status.conditions:
        s.header(0, "Conditions:")
        s.table(1, [["Type", "Status", "Reason"], *[[c.type, c.status, c.reason] for c in status.conditions]])
    owned = [rs for rs in replicasets
             if any(o.uid == dep.metadata.uid for o in rs.metadata.owner_references)]
    new = [rs for rs in owned if _same_template(rs.spec.template, spec.template)]
    old = [rs for rs in owned if rs not in new and (desired_replicas(rs.spec) or rs.status.replicas)]
    s.kv(0, "OldReplicaSets", ", ".join(_rs_line(rs) for rs in old) or NONE)
    s.kv(0, "NewReplicaSet", ", ".join(_rs_line(rs) for rs in new) or NONE)
    return s


def _same_template(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    """Equal but for the pod-template-hash label the deployment controller adds."""
    left, right = core_pb2.PodTemplateSpec(), core_pb2.PodTemplateSpec()
    left.CopyFrom(a)
    right.CopyFrom(b)
    for t in (left, right):
        t.metadata.labels.pop("pod-template-hash", None)
    return left == right


def describe_daemon_set(ds: apps_pb2.DaemonSet, pods: Sequence[core_pb2.Pod]) -> Section:
    """`pods`: the daemon set's own (controlled by it), counted by phase as kubectl does."""
    s = Section()
    spec, status = ds.spec, ds.status
    s.kv(0, "Name", ds.metadata.name)
    s.kv(0, "Namespace", ds.metadata.namespace)
    s.kv(0, "Selector", selector_text(spec.selector))
    s.kv(0, "Node-Selector", labels_text(spec.template.spec.node_selector))
    s.many(0, "Labels", pairs(ds.metadata.labels))
    s.many(0, "Annotations", annotation_lines(ds.metadata.annotations))
    s.kv(0, "Desired Number of Nodes Scheduled", status.desired_number_scheduled)
    s.kv(0, "Current Number of Nodes Scheduled", status.current_number_scheduled)
    s.kv(0, "Number of Nodes Scheduled with Up-to-date Pods", status.updated_number_scheduled)
    s.kv(0, "Number of Nodes Scheduled with Available Pods", status.number_available)
    s.kv(0, "Number of Nodes Misscheduled", status.number_misscheduled)
    _pods_status(s, ds, pods)
    _pod_template(s, spec.template)
    return s


def _pods_status(s: Section, owner: apps_pb2.DaemonSet | apps_pb2.StatefulSet, pods: Sequence[core_pb2.Pod]) -> None:
    """`Pods Status: 3 Running / 0 Waiting / 0 Succeeded / 0 Failed` over the pods `owner` controls."""
    uid = owner.metadata.uid
    owned = [p for p in pods if any(o.uid == uid and o.controller for o in p.metadata.owner_references)]
    phases = {phase: sum(p.status.phase == phase for p in owned)
              for phase in ("Running", "Pending", "Succeeded", "Failed")}
    s.kv(0, "Pods Status", f"{phases['Running']} Running / {phases['Pending']} Waiting / "
                           f"{phases['Succeeded']} Succeeded / {phases['Failed']} Failed")


def _pod_template(s: Section, template: core_pb2.PodTemplateSpec) -> None:
    s.header(0, "Pod Template:")
    s.many(1, "Labels", pairs(template.metadata.labels))
    if template.metadata.annotations:
        s.many(1, "Annotations", annotation_lines(template.metadata.annotations))
    containers(s, 1, "Containers", template.spec.containers, None)


def describe_stateful_set(sts: apps_pb2.StatefulSet, pods: Sequence[core_pb2.Pod]) -> Section:
    """`pods`: the stateful set's own (controlled by it), counted by phase as kubectl does."""
    s = Section()
    spec = sts.spec
    metadata(s, sts, kinds.resolve("statefulsets"))
    s.kv(0, "Selector", selector_text(spec.selector))
    s.kv(0, "Replicas", f"{spec.replicas} desired | {sts.status.replicas} total")
    s.kv(0, "Update Strategy", spec.update_strategy.type)
    if spec.update_strategy.HasField("rolling_update"):
        rolling = spec.update_strategy.rolling_update
        s.kv(1, "Partition", rolling.partition)
        if rolling.max_unavailable:
            s.kv(1, "MaxUnavailable", rolling.max_unavailable)
    _pods_status(s, sts, pods)
    _pod_template(s, spec.template)
    s.header(0, "Volume Claims:" if spec.volume_claim_templates else "Volume Claims:  <none>")
    for claim in spec.volume_claim_templates:
        s.kv(1, "Name", claim.metadata.name)
        s.kv(1, "StorageClass", claim.spec.storage_class_name)
        s.many(1, "Labels", pairs(claim.metadata.labels))
        s.many(1, "Annotations", annotation_lines(claim.metadata.annotations))
        s.kv(1, "Capacity", claim.spec.resources.requests.get("storage", NONE))
        s.kv(1, "Access Modes", f"[{' '.join(claim.spec.access_modes)}]")
    return s
