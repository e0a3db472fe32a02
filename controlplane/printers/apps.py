"""Table columns of the apps/v1 kinds: deployments, replica sets, daemon sets, stateful sets and controller
revisions.

The workloads show their pod counts (a DaemonSet counts nodes: desired, current,
ready, up-to-date, available, and its pods' node selector), and with -o wide the
pod template's containers, images and the selector (a StatefulSet only its ready
pods of the desired count, and with -o wide containers and images); a
ControllerRevision shows its controller as `kind.group/name` and its revision
number, as Kubernetes' printDeployment, printReplicaSet, printDaemonSet,
printStatefulSet and printControllerRevision do.
"""

from __future__ import annotations

from typing import Any

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import NONE, age, joined, labels_text, selector_text
from proto import apps_pb2

TEMPLATE_COLUMNS = (
    TableColumnDefinition("Containers", priority=1, description="Names of each container in the template."),
    TableColumnDefinition("Images", priority=1, description="Images referenced by each container in the template."),
    TableColumnDefinition("Selector", priority=1, description="Label query over pods that should match the "
                          "replica count."),
)


def desired_replicas(spec: Any) -> int:
    """spec.replicas of a Deployment or ReplicaSet; unset means 1, as the API defaults it."""
    return int(spec.replicas) if spec.HasField("replicas") else 1


def _template_cells(spec: Any) -> list[Cell]:
    """CONTAINERS IMAGES SELECTOR of a workload's pod template."""
    containers = spec.template.spec.containers
    return [joined(c.name for c in containers), joined(c.image for c in containers), selector_text(spec.selector)]


def _deployment_cells(dep: apps_pb2.Deployment, o: GenerateOptions) -> list[Cell]:
    status = dep.status
    return [dep.metadata.name, f"{status.ready_replicas}/{desired_replicas(dep.spec)}", status.updated_replicas,
            status.available_replicas, age(dep, o.now), *_template_cells(dep.spec)]


DEPLOYMENT = TableConvertor[apps_pb2.Deployment]((
    NAME,
    TableColumnDefinition("Ready", description="Number of the pod with ready state"),
    TableColumnDefinition("Up-to-date", type="integer", description="Total number of non-terminated pods "
                          "targeted by this deployment that have the desired template spec."),
    TableColumnDefinition("Available", type="integer", description="Total number of available pods (ready for "
                          "at least minReadySeconds) targeted by this deployment."),
    AGE,
    *TEMPLATE_COLUMNS,
), _deployment_cells)


def _replica_set_cells(rs: apps_pb2.ReplicaSet, o: GenerateOptions) -> list[Cell]:
    return [rs.metadata.name, desired_replicas(rs.spec), rs.status.replicas, rs.status.ready_replicas,
            age(rs, o.now), *_template_cells(rs.spec)]


REPLICA_SET = TableConvertor[apps_pb2.ReplicaSet]((
    NAME,
    TableColumnDefinition("Desired", type="integer", description="The number of desired replicas."),
    TableColumnDefinition("Current", type="integer", description="The most recently observed number of replicas."),
    TableColumnDefinition("Ready", type="integer", description="The number of pods targeted by this ReplicaSet "
                          "with a Ready Condition."),
    AGE,
    *TEMPLATE_COLUMNS,
), _replica_set_cells)


def _daemon_set_cells(ds: apps_pb2.DaemonSet, o: GenerateOptions) -> list[Cell]:
    status = ds.status
    return [ds.metadata.name, status.desired_number_scheduled, status.current_number_scheduled, status.number_ready,
            status.updated_number_scheduled, status.number_available,
            labels_text(ds.spec.template.spec.node_selector), age(ds, o.now), *_template_cells(ds.spec)]


DAEMON_SET = TableConvertor[apps_pb2.DaemonSet]((
    NAME,
    TableColumnDefinition("Desired", type="integer", description="The total number of nodes that should be running "
                          "the daemon pod (including nodes correctly running the daemon pod)."),
    TableColumnDefinition("Current", type="integer", description="The number of nodes that are running at least 1 "
                          "daemon pod and are supposed to run the daemon pod."),
    TableColumnDefinition("Ready", type="integer", description="The number of nodes that should be running the "
                          "daemon pod and have one or more of the daemon pod running with a Ready Condition."),
    TableColumnDefinition("Up-to-date", type="integer", description="The total number of nodes that are running "
                          "updated daemon pod"),
    TableColumnDefinition("Available", type="integer", description="The number of nodes that should be running the "
                          "daemon pod and have one or more of the daemon pod running and available (ready for at "
                          "least spec.minReadySeconds)"),
    TableColumnDefinition("Node Selector", description="NodeSelector is a selector which must be true for the pod "
                          "to fit on a node. Selector which must match a node's labels for the pod to be "
                          "scheduled on that node."),
    AGE,
    *TEMPLATE_COLUMNS[:2],
    TableColumnDefinition("Selector", priority=1, description="A label query over pods that are managed by the "
                          "daemon set. Must match in order to be controlled."),
), _daemon_set_cells)


def _stateful_set_cells(sts: apps_pb2.StatefulSet, o: GenerateOptions) -> list[Cell]:
    return [sts.metadata.name, f"{sts.status.ready_replicas}/{desired_replicas(sts.spec)}", age(sts, o.now),
            *_template_cells(sts.spec)[:2]]


STATEFUL_SET = TableConvertor[apps_pb2.StatefulSet]((
    NAME,
    TableColumnDefinition("Ready", description="Number of the pod with ready state"),
    AGE,
    *TEMPLATE_COLUMNS[:2],
), _stateful_set_cells)


def controller_of(obj: Any) -> str:
    """`daemonset.apps/web`: the controlling owner as kubectl names it, or <none>."""
    ref = next((r for r in obj.metadata.owner_references if r.HasField("controller") and r.controller), None)
    if ref is None:
        return NONE
    group = ref.api_version.rpartition("/")[0]
    return f"{ref.kind.lower()}{'.' + group if group else ''}/{ref.name}"


def _controller_revision_cells(cr: apps_pb2.ControllerRevision, o: GenerateOptions) -> list[Cell]:
    return [cr.metadata.name, controller_of(cr), cr.revision, age(cr, o.now)]


CONTROLLER_REVISION = TableConvertor[apps_pb2.ControllerRevision]((
    NAME,
    TableColumnDefinition("Controller", description="Controller of the object"),
    TableColumnDefinition("Revision", type="integer", description="Revision indicates the revision of the state "
                          "represented by Data."),
    AGE,
), _controller_revision_cells)
