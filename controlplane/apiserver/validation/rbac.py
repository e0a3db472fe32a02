"""Validation of rbac.authorization.k8s.io/v1: Roles, ClusterRoles and their bindings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlplane.apiserver.validation.field import Errors, invalid, required, unsupported
from proto import rbac_pb2

# The resource verbs, plus the special ones Kubernetes checks on their own (approve/sign on signers, ...).
_RBAC_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "approve", "sign",
               "attest", "bind", "escalate", "impersonate", "use", "*")


def _policy_rules(rules: Iterable[rbac_pb2.PolicyRule], path: str) -> Errors:
    errors: Errors = []
    for i, rule in enumerate(rules):
        p = f"{path}[{i}]"
        if not rule.verbs:
            errors.append(required(f"{p}.verbs", "verbs must contain at least one value"))
        errors += [unsupported(f"{p}.verbs[{j}]", v, _RBAC_VERBS) for j, v in enumerate(rule.verbs)
                   if v not in _RBAC_VERBS]
        if not rule.resources and not rule.non_resource_urls:
            errors.append(required(f"{p}.resources", "resource rules must supply at least one resource"))
    return errors


def validate_role(role: Any, old: Any) -> Errors:
    return _policy_rules(role.rules, "rules")


def validate_role_binding(binding: Any, old: Any) -> Errors:
    errors: Errors = []
    ref = binding.role_ref
    allowed = ("ClusterRole",) if isinstance(binding, rbac_pb2.ClusterRoleBinding) else ("Role", "ClusterRole")
    if ref.kind not in allowed:
        errors.append(unsupported("roleRef.kind", ref.kind, allowed))
    if not ref.name:
        errors.append(required("roleRef.name"))
    if old is not None and (old.role_ref.kind, old.role_ref.name) != (ref.kind, ref.name):
        errors.append(invalid("roleRef", f"{ref.kind}/{ref.name}", "cannot change roleRef"))
    for i, subject in enumerate(binding.subjects):
        p = f"subjects[{i}]"
        if subject.kind not in ("User", "Group", "ServiceAccount"):
            errors.append(unsupported(f"{p}.kind", subject.kind, ("User", "Group", "ServiceAccount")))
        if not subject.name:
            errors.append(required(f"{p}.name"))
        if subject.kind == "ServiceAccount" and not subject.namespace:
            errors.append(required(f"{p}.namespace"))
    return errors
