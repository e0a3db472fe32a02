"""Strategies: one object per kind saying what the kind means to the registry.

`for_kind` is the registry's only way to learn what is special about a kind;
a kind missing from `STRATEGIES` gets the default `Strategy` (base.py), right
for kinds with nothing special (LimitRange, metrics reports). Kinds that differ
only in defaults and checks are plain `Strategy(defaulter=, validator=)` entries;
kinds with rules of their own have a subclass in the module of their API group,
as Kubernetes' pkg/registry/<group>/<resource>/strategy.go.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.strategies.admissionregistration import (
    MUTATING_WEBHOOK_CONFIGURATION,
    VALIDATING_WEBHOOK_CONFIGURATION,
)
from controlplane.apiserver.strategies.apiextensions import CustomResourceDefinitionStrategy
from controlplane.apiserver.strategies.apps import CONTROLLER_REVISION, DAEMON_SET, STATEFUL_SET
from controlplane.apiserver.strategies.base import StoreContext, Strategy
from controlplane.apiserver.strategies.batch import CronJobStrategy, JobStrategy
from controlplane.apiserver.strategies.certificates import CertificateSigningRequestStrategy
from controlplane.apiserver.strategies.core import (
    NamespaceStrategy,
    PodStrategy,
    ResourceQuotaStrategy,
    ServiceStrategy,
)
from controlplane.apiserver.strategies.discovery import EndpointSliceStrategy
from controlplane.apiserver.strategies.networkpolicy import NetworkPolicyStrategy
from controlplane.apiserver.strategies.policy import PodDisruptionBudgetStrategy
from controlplane.apiserver.strategies.rbac import RoleBindingStrategy, RoleStrategy
from controlplane.apiserver.strategies.storage import (
    STORAGE_CLASS,
    PersistentVolumeClaimStrategy,
    PersistentVolumeStrategy,
)
from controlplane.apiserver.validation import apps, autoscaling, coordination, core, serviceaccounts
from controlplane.apiserver.validation import networking as networking_validation
from controlplane.apiserver.validation.field import Errors
from proto.kinds import Kind

__all__ = ["STRATEGIES", "StoreContext", "Strategy", "apply_defaults", "for_kind", "validate"]

STRATEGIES: dict[str, Strategy] = {
    # core/v1
    "Pod": PodStrategy(),
    "Service": ServiceStrategy(),
    "Endpoints": Strategy(defaulter=defaults.default_endpoints, validator=core.validate_endpoints),
    "Namespace": NamespaceStrategy(),
    "Node": Strategy(validator=core.validate_node),
    "Event": Strategy(validator=core.validate_event),
    "ConfigMap": Strategy(validator=core.validate_config_map),
    "Secret": Strategy(defaulter=defaults.default_secret, validator=core.validate_secret),
    "ServiceAccount": Strategy(validator=serviceaccounts.validate_service_account),
    "ResourceQuota": ResourceQuotaStrategy(),
    "PersistentVolume": PersistentVolumeStrategy(),
    "PersistentVolumeClaim": PersistentVolumeClaimStrategy(),
    # apps/v1
    "ReplicaSet": Strategy(defaulter=defaults.default_replica_set, validator=apps.validate_replica_set),
    "Deployment": Strategy(defaulter=defaults.default_deployment, validator=apps.validate_deployment),
    "DaemonSet": DAEMON_SET,
    "StatefulSet": STATEFUL_SET,
    "ControllerRevision": CONTROLLER_REVISION,
    # batch/v1
    "Job": JobStrategy(),
    "CronJob": CronJobStrategy(),
    # policy/v1
    "PodDisruptionBudget": PodDisruptionBudgetStrategy(),
    # discovery.k8s.io/v1
    "EndpointSlice": EndpointSliceStrategy(),
    # networking.k8s.io/v1
    "Ingress": Strategy(validator=networking_validation.validate_ingress),
    "IngressClass": Strategy(validator=networking_validation.validate_ingress_class),
    "NetworkPolicy": NetworkPolicyStrategy(),
    # storage.k8s.io/v1
    "StorageClass": STORAGE_CLASS,
    # coordination.k8s.io/v1, autoscaling/v2
    "Lease": Strategy(validator=coordination.validate_lease),
    "HorizontalPodAutoscaler": Strategy(defaulter=defaults.default_horizontal_pod_autoscaler,
                                        validator=autoscaling.validate_horizontal_pod_autoscaler),
    # rbac.authorization.k8s.io/v1
    "Role": RoleStrategy(),
    "ClusterRole": RoleStrategy(),
    "RoleBinding": RoleBindingStrategy(),
    "ClusterRoleBinding": RoleBindingStrategy(),
    # admissionregistration.k8s.io/v1
    "MutatingWebhookConfiguration": MUTATING_WEBHOOK_CONFIGURATION,
    "ValidatingWebhookConfiguration": VALIDATING_WEBHOOK_CONFIGURATION,
    # certificates.k8s.io/v1
    "CertificateSigningRequest": CertificateSigningRequestStrategy(),
    # apiextensions.k8s.io/v1
    "CustomResourceDefinition": CustomResourceDefinitionStrategy(),
}
_DEFAULT = Strategy()
# Strategies of the kinds the API learns while it runs, by (group, kind): custom resources, one per
# CustomResourceDefinition (controlplane/apiserver/crd/served.py keeps it current).
DYNAMIC: dict[tuple[str, str], Strategy] = {}


def for_kind(kind: Kind) -> Strategy:
    if DYNAMIC:
        found = DYNAMIC.get((kind.group, kind.kind))
        if found is not None:
            return found
    return STRATEGIES.get(kind.kind, _DEFAULT)


def apply_defaults(kind: Kind, obj: Message) -> None:
    """Fill the unset fields of `obj` (a `kind`) in place, as Kubernetes' defaulting does."""
    for_kind(kind).default(obj)


def validate(kind: Kind, obj: Message, old: Message | None) -> Errors:
    """What is wrong with `obj` as a `kind`, as (field path, message) pairs; [] when valid.

    `old` is the stored object on update, None on create. Defaults must already be
    applied (they are part of what is validated), and the server must have filled
    the name from generateName.
    """
    strategy = for_kind(kind)
    return strategy.validate(kind, obj) if old is None else strategy.validate_update(kind, obj, old)
