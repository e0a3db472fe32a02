"""Strategies: one object per kind saying what the kind means to the registry.

`for_kind` is the registry's only way to learn what is special about a kind;
a kind missing from `STRATEGIES` gets the default `Strategy` (base.py), right
for kinds with nothing special (LimitRange, metrics reports). One module per
API group, as Kubernetes' pkg/registry/<group>/<resource>/strategy.go.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.strategies.apps import DeploymentStrategy, ReplicaSetStrategy
from controlplane.apiserver.strategies.autoscaling import HorizontalPodAutoscalerStrategy
from controlplane.apiserver.strategies.base import StoreContext, Strategy
from controlplane.apiserver.strategies.certificates import CertificateSigningRequestStrategy
from controlplane.apiserver.strategies.coordination import LeaseStrategy
from controlplane.apiserver.strategies.core import (
    ConfigMapStrategy,
    EndpointsStrategy,
    EventStrategy,
    NamespaceStrategy,
    NodeStrategy,
    PodStrategy,
    ResourceQuotaStrategy,
    SecretStrategy,
    ServiceStrategy,
)
from controlplane.apiserver.strategies.rbac import RoleBindingStrategy, RoleStrategy
from controlplane.apiserver.validation.field import Errors
from proto.kinds import Kind

__all__ = ["STRATEGIES", "StoreContext", "Strategy", "apply_defaults", "for_kind", "validate"]

STRATEGIES: dict[str, Strategy] = {
    # core/v1
    "Pod": PodStrategy(),
    "Service": ServiceStrategy(),
    "Endpoints": EndpointsStrategy(),
    "Namespace": NamespaceStrategy(),
    "Node": NodeStrategy(),
    "Event": EventStrategy(),
    "ConfigMap": ConfigMapStrategy(),
    "Secret": SecretStrategy(),
    "ResourceQuota": ResourceQuotaStrategy(),
    # apps/v1
    "ReplicaSet": ReplicaSetStrategy(),
    "Deployment": DeploymentStrategy(),
    # coordination.k8s.io/v1, autoscaling/v2
    "Lease": LeaseStrategy(),
    "HorizontalPodAutoscaler": HorizontalPodAutoscalerStrategy(),
    # rbac.authorization.k8s.io/v1
    "Role": RoleStrategy(),
    "ClusterRole": RoleStrategy(),
    "RoleBinding": RoleBindingStrategy(),
    "ClusterRoleBinding": RoleBindingStrategy(),
    # certificates.k8s.io/v1
    "CertificateSigningRequest": CertificateSigningRequestStrategy(),
}
_DEFAULT = Strategy()


def for_kind(kind: Kind) -> Strategy:
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
