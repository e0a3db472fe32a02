"""Table printing for every kind: one column definition per kind, for kctl and HTTP Tables alike.

Kubernetes answers `kubectl get` with meta.k8s.io/v1 Table objects its apiserver
builds from pkg/printers/internalversion: per kind, a list of column
definitions (name, type, format, description, priority) and a function from an
object to its row's cells. This package is that, for Flotilla's kinds:

- `table`: the shapes (`TableColumnDefinition`, `TableConvertor`, `Table`,
  `TableRow`) and `build_table`, plus `Table.to_dict` for the JSON Table;
- `text`: how cells spell ages, labels, selectors and absent values;
- one module per API group (`core`, `apps`, `batch`, `policy`, `discovery`, `autoscaling`,
  `certificates`, `coordination`, `storage`) with that group's convertors and the cell helpers kctl
  describe shares (pod status, node roles, event ages…);
- `TABLE_CONVERTORS` here: kind name → convertor (Kubernetes' AddHandlers);
  every other kind gets `DEFAULT` (Name, Age).

It lives in controlplane/, beside the apiserver rather than inside it, because
its only inputs are API objects: the apiserver's HTTP Tables use it, and kctl
renders its `get` tables from the very same definitions (imports point down:
kctl may import controlplane, never the reverse).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from controlplane.printers import (
    admissionregistration,
    apiextensions,
    apps,
    autoscaling,
    batch,
    certificates,
    coordination,
    core,
    discovery,
    networking,
    networkpolicy,
    policy,
    rbac,
    storage,
)
from controlplane.printers.table import (
    DEFAULT,
    Cell,
    GenerateOptions,
    Table,
    TableColumnDefinition,
    TableConvertor,
    TableRow,
    build_table,
)
from proto import kinds

TABLE_CONVERTORS: dict[str, TableConvertor[Any]] = {
    "Pod": core.POD,
    "Node": core.NODE,
    "Service": core.SERVICE,
    "Endpoints": core.ENDPOINTS,
    "Event": core.EVENT,
    "Namespace": core.NAMESPACE,
    "ConfigMap": core.CONFIG_MAP,
    "Secret": core.SECRET,
    "ServiceAccount": core.SERVICE_ACCOUNT,
    "ResourceQuota": core.RESOURCE_QUOTA,
    "LimitRange": core.LIMIT_RANGE,
    "PersistentVolume": storage.PERSISTENT_VOLUME,
    "PersistentVolumeClaim": storage.PERSISTENT_VOLUME_CLAIM,
    "StorageClass": storage.STORAGE_CLASS,
    "Deployment": apps.DEPLOYMENT,
    "ReplicaSet": apps.REPLICA_SET,
    "DaemonSet": apps.DAEMON_SET,
    "StatefulSet": apps.STATEFUL_SET,
    "ControllerRevision": apps.CONTROLLER_REVISION,
    "Job": batch.JOB,
    "CronJob": batch.CRON_JOB,
    "PodDisruptionBudget": policy.POD_DISRUPTION_BUDGET,
    "EndpointSlice": discovery.ENDPOINT_SLICE,
    "Ingress": networking.INGRESS,
    "IngressClass": networking.INGRESS_CLASS,
    "NetworkPolicy": networkpolicy.NETWORK_POLICY,
    "Lease": coordination.LEASE,
    "MutatingWebhookConfiguration": admissionregistration.MUTATING_WEBHOOK_CONFIGURATION,
    "ValidatingWebhookConfiguration": admissionregistration.VALIDATING_WEBHOOK_CONFIGURATION,
    "CertificateSigningRequest": certificates.CERTIFICATE_SIGNING_REQUEST,
    "HorizontalPodAutoscaler": autoscaling.HORIZONTAL_POD_AUTOSCALER,
    "Role": rbac.ROLE,
    "ClusterRole": rbac.CLUSTER_ROLE,
    "RoleBinding": rbac.ROLE_BINDING,
    "ClusterRoleBinding": rbac.CLUSTER_ROLE_BINDING,
    "CustomResourceDefinition": apiextensions.CUSTOM_RESOURCE_DEFINITION,
}


def convertor_for(kind: kinds.Kind) -> TableConvertor[Any]:
    """The kind's convertor, or the default Name/Age one."""
    return TABLE_CONVERTORS.get(kind.kind, DEFAULT)


def generate_table(kind: kinds.Kind, objs: Sequence[Message], *, at: datetime | None = None, wide: bool = True,
                   no_headers: bool = False, resource_version: str = "") -> Table:
    """The Table of `objs` (all of `kind`): what a List request with `as=Table` answers."""
    return build_table(convertor_for(kind), objs, at=at, wide=wide, no_headers=no_headers,
                       resource_version=resource_version)


__all__ = [
    "DEFAULT",
    "TABLE_CONVERTORS",
    "Cell",
    "GenerateOptions",
    "Table",
    "TableColumnDefinition",
    "TableConvertor",
    "TableRow",
    "build_table",
    "convertor_for",
    "generate_table",
]
