"""Table columns of rbac.authorization.k8s.io/v1: roles, cluster roles and their bindings.

As Kubernetes prints them: a Role or ClusterRole by its name and creation time
(`Created At`, a date, not an age); a binding by the role it grants
(`ClusterRole/view`) and, with -o wide, who it grants it to — users, groups and
service accounts (`namespace/name`), each comma-separated.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.printers.table import (
    AGE,
    CREATED_AT,
    NAME,
    Cell,
    GenerateOptions,
    TableColumnDefinition,
    TableConvertor,
)
from controlplane.printers.text import age, created_at
from proto import rbac_pb2


def _role_cells(role: rbac_pb2.Role | rbac_pb2.ClusterRole, o: GenerateOptions) -> list[Cell]:
    return [role.metadata.name, created_at(role)]


ROLE = TableConvertor[rbac_pb2.Role]((NAME, CREATED_AT), _role_cells)
CLUSTER_ROLE = TableConvertor[rbac_pb2.ClusterRole]((NAME, CREATED_AT), _role_cells)


def subjects_strings(subjects: Iterable[rbac_pb2.Subject]) -> tuple[str, str, str]:
    """rbac.SubjectsStrings: the users, groups and service accounts (`ns/name`) a binding names."""
    users, groups, service_accounts = [], [], []
    for s in subjects:
        if s.kind == "User":
            users.append(s.name)
        elif s.kind == "Group":
            groups.append(s.name)
        elif s.kind == "ServiceAccount":
            service_accounts.append(f"{s.namespace}/{s.name}" if s.namespace else s.name)
    return ", ".join(users), ", ".join(groups), ", ".join(service_accounts)


def _binding_cells(binding: rbac_pb2.RoleBinding | rbac_pb2.ClusterRoleBinding, o: GenerateOptions) -> list[Cell]:
    role = f"{binding.role_ref.kind}/{binding.role_ref.name}"
    return [binding.metadata.name, role, age(binding, o.now), *subjects_strings(binding.subjects)]


_BINDING_COLUMNS = (
    NAME,
    TableColumnDefinition("Role", description="RoleRef can reference a Role in the current namespace or a "
                          "ClusterRole in the global namespace."),
    AGE,
    TableColumnDefinition("Users", priority=1, description="Users in the roleBinding"),
    TableColumnDefinition("Groups", priority=1, description="Groups in the roleBinding"),
    TableColumnDefinition("ServiceAccounts", priority=1, description="ServiceAccounts in the roleBinding"),
)
ROLE_BINDING = TableConvertor[rbac_pb2.RoleBinding](_BINDING_COLUMNS, _binding_cells)
CLUSTER_ROLE_BINDING = TableConvertor[rbac_pb2.ClusterRoleBinding](_BINDING_COLUMNS, _binding_cells)
