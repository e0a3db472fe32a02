"""Table columns of the apps/v1 kinds: deployments and replica sets.

Both show their replica counts, and with -o wide the pod template's containers,
images and the selector, as Kubernetes' printDeployment and printReplicaSet do.
"""

from __future__ import annotations

from typing import Any

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import age, joined, selector_text
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
