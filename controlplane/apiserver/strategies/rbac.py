"""Strategies of rbac.authorization.k8s.io/v1: roles and bindings, namespaced and cluster-wide.

Their names need only be one URL path segment, so `system:node` is a valid name.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import rbac as validation
from controlplane.apiserver.validation.field import Errors
from controlplane.apiserver.validation.meta import is_path_segment_name


class RoleStrategy(Strategy):
    """Role and ClusterRole."""

    def name_rule(self, name: str) -> list[str]:
        return is_path_segment_name(name)

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_role(obj, old)


class RoleBindingStrategy(RoleStrategy):
    """RoleBinding and ClusterRoleBinding."""

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_role_binding(obj, old)
