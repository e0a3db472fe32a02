"""RBAC escalation prevention: nobody grants, through a role or a binding, what it does not hold.

Without it a namespace `admin` (who may write Roles and RoleBindings) binds
itself to `cluster-admin`, or writes a Role granting `*` and binds that. As
Kubernetes' RBAC storage does, a write of

- a Role or ClusterRole is allowed when the caller holds every rule in it
  (in the role's namespace; cluster-wide grants count everywhere), or may
  `escalate` roles/clusterroles;
- a RoleBinding or ClusterRoleBinding is allowed when the caller holds every
  rule of the role it names, or may `bind` that role (verb `bind` on
  roles/clusterroles, by name, in the binding's namespace).

`system:masters` and the apiserver's own writes are exempt. A refusal reads as
Kubernetes' does:

    rolebindings.rbac.authorization.k8s.io "me-admin" is forbidden: user "ann" (groups=["team"
    "system:authenticated"]) is attempting to grant RBAC permissions not currently held:
    {APIGroups:["*"], Resources:["*"], Verbs:["*"]}

The rules come from the authorizer's own watch-fed cache (rbac.py), so the
answer matches what the caller can do right now. With an authorizer other than
RBAC (AlwaysAllow) everybody may do everything and there is nothing to prevent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from controlplane.apiserver import rbac
from controlplane.apiserver.admission.interface import CREATE, UPDATE, Request
from controlplane.apiserver.auth import MASTERS, Attributes, Authorizer
from proto import rbac_pb2
from proto.errors import Forbidden, NotFound

NAME = "RBACEscalation"
RBAC_GROUP = "rbac.authorization.k8s.io"


class RBACEscalation:
    """A validating plugin for the four RBAC kinds; active once an RBAC authorizer is set."""

    NAME = NAME

    def __init__(self) -> None:
        self._rbac: rbac.RBACAuthorizer | None = None

    def set_authorizer(self, authorizer: Authorizer) -> None:
        self._rbac = authorizer if isinstance(authorizer, rbac.RBACAuthorizer) else None

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        if (self._rbac is not None and request.caller is not None and request.operation in (CREATE, UPDATE)
                and MASTERS not in request.caller.user.groups):
            obj = request.obj
            if isinstance(obj, rbac_pb2.Role | rbac_pb2.ClusterRole):
                self._check_role(self._rbac, request, obj)
            elif isinstance(obj, rbac_pb2.RoleBinding | rbac_pb2.ClusterRoleBinding):
                self._check_binding(self._rbac, request, obj)
        yield

    @staticmethod
    def _refuse(request: Request, why: str) -> Forbidden:
        name = request.obj.metadata.name  # type: ignore[attr-defined]
        return Forbidden(f'{request.kind.qualified_resource} "{name}" is forbidden: {why}')

    def _check_role(self, authorizer: rbac.RBACAuthorizer, request: Request,
                    role: rbac_pb2.Role | rbac_pb2.ClusterRole) -> None:
        assert request.caller is not None
        user, namespace = request.caller.user, role.metadata.namespace
        if authorizer.allowed(Attributes(user, "escalate", request.kind.resource, namespace, role.metadata.name,
                                         api_group=RBAC_GROUP)):
            return
        why = rbac.confirm_no_escalation(authorizer, user, namespace, role.rules)
        if why is not None:
            raise self._refuse(request, why)

    def _check_binding(self, authorizer: rbac.RBACAuthorizer, request: Request,
                       binding: rbac_pb2.RoleBinding | rbac_pb2.ClusterRoleBinding) -> None:
        assert request.caller is not None
        user, namespace, ref = request.caller.user, binding.metadata.namespace, binding.role_ref
        resource = "clusterroles" if ref.kind == "ClusterRole" else "roles"
        if authorizer.allowed(Attributes(user, "bind", resource, namespace, ref.name,
                                         api_group=ref.api_group or RBAC_GROUP)):
            return
        rules = authorizer.role_reference_rules(ref, namespace)
        if rules is None:
            raise NotFound(f'{resource}.{RBAC_GROUP} "{ref.name}" not found')
        why = rbac.confirm_no_escalation(authorizer, user, namespace, rules)
        if why is not None:
            raise self._refuse(request, why)
