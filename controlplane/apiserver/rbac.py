"""RBAC: the apiserver's authoriser, and the default roles every cluster starts with.

A request is allowed when some binding grants the caller a rule matching it:
a ClusterRoleBinding grants a ClusterRole's rules everywhere; a RoleBinding
grants a Role's (or a ClusterRole's) rules in its own namespace. Subjects are
users, groups, or service accounts (user `system:serviceaccount:NS:NAME`).
`system:masters` is allowed everything without a lookup, as in Kubernetes.

The policy objects are read from a cache the apiserver keeps current by
watching its own registry, so an authorisation check costs no etcd read.

Escalation prevention (Kubernetes' pkg/registry/rbac/validation) lives here
too, because it is a question about rules: `covers(owner, servant)` says which
of the servant rules the owner rules do not grant, and `confirm_no_escalation`
refuses a caller who would grant rules it does not hold itself. The admission
plugin admission/rbacescalation.py applies it to Role and binding writes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from client import bootstrap
from controlplane.apiserver.auth import AUTHENTICATED, MASTERS, Attributes, UserInfo
from proto import kinds, rbac_pb2
from proto.errors import Forbidden

if TYPE_CHECKING:  # the registry runs admission, whose RBAC escalation plugin imports this module
    from controlplane.apiserver.registry import Registry

log = logging.getLogger(__name__)

RBAC_KINDS = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")


def rule_allows(rule: rbac_pb2.PolicyRule, attrs: Attributes) -> bool:
    if "*" not in rule.verbs and attrs.verb not in rule.verbs:
        return False
    if "*" not in rule.api_groups and attrs.api_group not in rule.api_groups:
        return False
    wanted = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    resources = set(rule.resources)
    if not ("*" in resources or wanted in resources
            or (attrs.subresource and f"*/{attrs.subresource}" in resources)):
        return False
    return not rule.resource_names or attrs.name in rule.resource_names


def subject_matches(subject: rbac_pb2.Subject, attrs: Attributes) -> bool:
    if subject.kind == "User":
        return subject.name == attrs.user.name
    if subject.kind == "Group":
        return subject.name in attrs.user.groups
    if subject.kind == "ServiceAccount":
        return attrs.user.name == f"system:serviceaccount:{subject.namespace}:{subject.name}"
    return False


class RBACAuthorizer:
    """Answers from in-memory copies of Roles, ClusterRoles and their bindings."""

    def __init__(self) -> None:
        self.roles: dict[tuple[str, str], rbac_pb2.Role] = {}
        self.cluster_roles: dict[str, rbac_pb2.ClusterRole] = {}
        self.role_bindings: dict[tuple[str, str], rbac_pb2.RoleBinding] = {}
        self.cluster_role_bindings: dict[str, rbac_pb2.ClusterRoleBinding] = {}
        self.synced = asyncio.Event()

    # ------------------------------------------------------------ cache

    def observe(self, event_type: str, obj: Message) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        gone = event_type == "DELETED"
        if isinstance(obj, rbac_pb2.Role):
            self._put(self.roles, (meta.namespace, meta.name), obj, gone)
        elif isinstance(obj, rbac_pb2.ClusterRole):
            self._put(self.cluster_roles, meta.name, obj, gone)
        elif isinstance(obj, rbac_pb2.RoleBinding):
            self._put(self.role_bindings, (meta.namespace, meta.name), obj, gone)
        elif isinstance(obj, rbac_pb2.ClusterRoleBinding):
            self._put(self.cluster_role_bindings, meta.name, obj, gone)

    def forget(self, kind: str) -> None:
        tables: dict[str, dict[Any, Any]] = {
            "Role": self.roles, "ClusterRole": self.cluster_roles,
            "RoleBinding": self.role_bindings, "ClusterRoleBinding": self.cluster_role_bindings}
        tables[kind].clear()

    @staticmethod
    def _put(table: dict[Any, Any], key: object, obj: Message, gone: bool) -> None:
        if gone:
            table.pop(key, None)
        else:
            table[key] = obj

    # ------------------------------------------------------------ decisions

    def rules_for(self, attrs: Attributes) -> Iterable[rbac_pb2.PolicyRule]:
        """Every rule the caller holds that applies in the request's namespace."""
        for binding in self.cluster_role_bindings.values():
            if any(subject_matches(s, attrs) for s in binding.subjects):
                role = self.cluster_roles.get(binding.role_ref.name)
                if role is not None:
                    yield from role.rules
        if not attrs.namespace:
            return
        for (namespace, _), rb in self.role_bindings.items():
            if namespace != attrs.namespace or not any(subject_matches(s, attrs) for s in rb.subjects):
                continue
            if rb.role_ref.kind == "ClusterRole":
                cluster_role = self.cluster_roles.get(rb.role_ref.name)
                if cluster_role is not None:
                    yield from cluster_role.rules
            else:
                namespaced_role = self.roles.get((namespace, rb.role_ref.name))
                if namespaced_role is not None:
                    yield from namespaced_role.rules

    def role_reference_rules(self, role_ref: rbac_pb2.RoleRef, namespace: str) -> list[rbac_pb2.PolicyRule] | None:
        """The rules a binding's roleRef names (a Role in `namespace`, or a ClusterRole); None if it is missing."""
        if role_ref.kind == "ClusterRole":
            cluster_role = self.cluster_roles.get(role_ref.name)
            return None if cluster_role is None else list(cluster_role.rules)
        role = self.roles.get((namespace, role_ref.name))
        return None if role is None else list(role.rules)

    def allowed(self, attrs: Attributes) -> bool:
        if MASTERS in attrs.user.groups:
            return True
        return any(rule_allows(rule, attrs) for rule in self.rules_for(attrs))

    def authorize(self, attrs: Attributes) -> None:
        if self.allowed(attrs):
            return
        raise Forbidden(forbidden_message(attrs))


def forbidden_message(attrs: Attributes) -> str:
    """Kubernetes' words for a refusal: `deployments.apps "web" is forbidden: User "u" cannot delete ...`.

    The object is named by its group-qualified resource (as NotFound names it);
    the refused action by resource/subresource, verb, group and scope.
    """
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    named = f' "{attrs.name}"' if attrs.name else ""
    what = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    return (f'{qualified}{named} is forbidden: User "{attrs.user.name}" cannot {attrs.verb} resource '
            f'"{what}" in API group "{attrs.api_group}"{scope}')


# ---------------------------------------------------------------- escalation prevention

def _breakdown(rule: rbac_pb2.PolicyRule) -> list[rbac_pb2.PolicyRule]:
    """The rule as rules of one group, one resource, one verb and at most one name (or one URL and one verb)."""
    out = []
    for group in rule.api_groups:
        for resource in rule.resources:
            for verb in rule.verbs:
                for name in rule.resource_names or [""]:
                    out.append(rbac_pb2.PolicyRule(api_groups=[group], resources=[resource], verbs=[verb],
                                                   resource_names=[name] if name else []))
    out += [rbac_pb2.PolicyRule(non_resource_urls=[url], verbs=[verb])
            for url in rule.non_resource_urls for verb in rule.verbs]
    return out


def _resources_cover(owner: Iterable[str], wanted: Iterable[str]) -> bool:
    owned = set(owner)
    if "*" in owned:
        return True
    for resource in wanted:
        if resource in owned:
            continue
        # `*/scale` covers the scale subresource of every resource
        if "/" not in resource or f"*/{resource.split('/', 1)[1]}" not in owned:
            return False
    return True


def _url_covers(owner: str, path: str) -> bool:
    return owner == path or (owner.endswith("*") and path.startswith(owner.rstrip("*")))


def _rule_covers(owner: rbac_pb2.PolicyRule, sub: rbac_pb2.PolicyRule) -> bool:
    """Whether one owner rule grants a broken-down rule (Kubernetes' ruleCovers)."""
    if not ("*" in owner.verbs or set(sub.verbs) <= set(owner.verbs)):
        return False
    if not ("*" in owner.api_groups or set(sub.api_groups) <= set(owner.api_groups)):
        return False
    if not _resources_cover(owner.resources, sub.resources):
        return False
    if not all(any(_url_covers(o, u) for o in owner.non_resource_urls) for u in sub.non_resource_urls):
        return False
    if sub.resource_names:
        return not owner.resource_names or set(sub.resource_names) <= set(owner.resource_names)
    return not owner.resource_names


def covers(owner_rules: Iterable[rbac_pb2.PolicyRule],
           servant_rules: Iterable[rbac_pb2.PolicyRule]) -> list[rbac_pb2.PolicyRule]:
    """The parts of `servant_rules` no owner rule grants (empty: the owner holds them all)."""
    owners = list(owner_rules)
    return [sub for rule in servant_rules for sub in _breakdown(rule)
            if not any(_rule_covers(owner, sub) for owner in owners)]


def compact_rules(rules: Iterable[rbac_pb2.PolicyRule]) -> list[rbac_pb2.PolicyRule]:
    """Rules of one group and one resource (and nothing else) merged into one rule with all their verbs."""
    compacted: list[rbac_pb2.PolicyRule] = []
    simple: dict[tuple[str, str], rbac_pb2.PolicyRule] = {}
    for rule in rules:
        if (len(rule.api_groups) == 1 and len(rule.resources) == 1 and not rule.resource_names
                and not rule.non_resource_urls):
            key = (rule.api_groups[0], rule.resources[0])
            if key in simple:
                simple[key].verbs.extend(rule.verbs)
            else:
                simple[key] = rbac_pb2.PolicyRule()
                simple[key].CopyFrom(rule)
        else:
            compacted.append(rule)
    return compacted + list(simple.values())


def _go_quoted(items: Iterable[str]) -> str:
    """A string list as Go's %q prints it: ["a" "b"]."""
    return "[" + " ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


def compact_string(rule: rbac_pb2.PolicyRule) -> str:
    """`{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}`, as Kubernetes' escalation errors print rules."""
    parts = [f"{label}:{_go_quoted(values)}" for label, values in (
        ("APIGroups", rule.api_groups), ("Resources", rule.resources), ("NonResourceURLs", rule.non_resource_urls),
        ("ResourceNames", rule.resource_names), ("Verbs", rule.verbs)) if values]
    return "{" + ", ".join(parts) + "}"


def escalation_message(user: UserInfo, missing: Iterable[rbac_pb2.PolicyRule]) -> str:
    """Kubernetes' ConfirmNoEscalation text: who tries to grant what it does not hold."""
    described = sorted({compact_string(rule) for rule in compact_rules(missing)})
    return (f"user {json.dumps(user.name)} (groups={_go_quoted(user.groups)}) is attempting to grant RBAC "
            "permissions not currently held:\n" + "\n".join(described))


def confirm_no_escalation(authorizer: RBACAuthorizer, user: UserInfo, namespace: str,
                          rules: Iterable[rbac_pb2.PolicyRule]) -> str | None:
    """None if `user` holds every rule in `namespace` (cluster-wide grants included); else why not."""
    held = list(authorizer.rules_for(Attributes(user, "", "", namespace)))
    missing = covers(held, rules)
    return escalation_message(user, missing) if missing else None


# ---------------------------------------------------------------- default policy

def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> rbac_pb2.PolicyRule:
    return rbac_pb2.PolicyRule(verbs=verbs, api_groups=groups, resources=resources)


READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]
ALL_GROUPS = ["", "apps", "autoscaling", "batch", "coordination.k8s.io", "metrics.k8s.io", "policy"]
CERTIFICATES = "certificates.k8s.io"
DISCOVERY = "discovery.k8s.io"
# Every namespace user may read a Service's EndpointSlices; no aggregated role writes them, as in
# Kubernetes (CVE-2021-25740: a hand-written slice could point a Service at any address).
ENDPOINT_SLICES_READ = _rule(READ, [DISCOVERY], ["endpointslices"])
NETWORKING = "networking.k8s.io"
INGRESSES_WRITE = _rule(READ + WRITE, [NETWORKING], ["ingresses"])
INGRESSES_READ = _rule(READ, [NETWORKING], ["ingresses", "ingresses/status"])
NETWORK_POLICIES_WRITE = _rule(READ + WRITE, [NETWORKING], ["networkpolicies"])
NETWORK_POLICIES_READ = _rule(READ, [NETWORKING], ["networkpolicies"])
WORKLOADS = ["pods", "services", "endpoints", "configmaps", "secrets", "replicasets", "deployments",
             "horizontalpodautoscalers", "events", "leases", "jobs", "cronjobs", "daemonsets",
             "controllerrevisions", "poddisruptionbudgets", "statefulsets", "statefulsets/scale",
             "deployments/scale", "replicasets/scale", "serviceaccounts"]
# Minting a token for an account is as strong as running a pod as it, which edit may (as Kubernetes' edit).
SERVICE_ACCOUNT_TOKENS = _rule(["create"], [""], ["serviceaccounts/token"])


def default_cluster_roles() -> list[rbac_pb2.ClusterRole]:
    """The roles Kubernetes bootstraps, trimmed to the resources Flotilla serves."""
    roles = {
        "cluster-admin": [_rule(["*"], ["*"], ["*"])],
        "admin": [_rule(READ + WRITE, ALL_GROUPS, [*WORKLOADS, "pods/status", "pods/binding", "pods/log",
                                                    "pods/exec"]),
                  _rule(READ + WRITE, ["rbac.authorization.k8s.io"], ["roles", "rolebindings"]),
                  ENDPOINT_SLICES_READ, INGRESSES_WRITE, NETWORK_POLICIES_WRITE, SERVICE_ACCOUNT_TOKENS],
        "edit": [_rule(READ + WRITE, ALL_GROUPS, WORKLOADS), _rule(["create"], [""], ["pods/exec"]),
                 _rule(READ, [""], ["pods/log"]), ENDPOINT_SLICES_READ, INGRESSES_WRITE, NETWORK_POLICIES_WRITE,
                 SERVICE_ACCOUNT_TOKENS],
        "view": [_rule(READ, ALL_GROUPS, [*(r for r in WORKLOADS if r != "secrets"), "podmetrics", "pods/log"]),
                 ENDPOINT_SLICES_READ, INGRESSES_READ, NETWORK_POLICIES_READ],
        "system:kube-scheduler": [
            _rule(READ, [""], ["pods", "nodes", "namespaces"]),
            _rule(["create"], [""], ["pods/binding", "events"]),
            _rule(["update", "patch"], [""], ["pods/status"]),
            _rule([*READ, "create", "update"], ["coordination.k8s.io"], ["leases"]),
            # VolumeBinding: claims, their volumes and classes; a WaitForFirstConsumer claim gets its node
            _rule(READ, [""], ["persistentvolumeclaims", "persistentvolumes"]),
            _rule(["update", "patch"], [""], ["persistentvolumeclaims"]),
            _rule(READ, ["storage.k8s.io"], ["storageclasses"])],
        "system:kube-controller-manager": [_rule(READ + WRITE, ["*"], ["*"]),
                                           # csrapproving and csrsigning (certificates.py: approve/sign on signers)
                                           _rule(["approve", "sign"], [CERTIFICATES], ["signers"])],
        # A bootstrap token's whole power: ask for a certificate and watch the answer.
        "system:node-bootstrapper": [_rule([*READ, "create"], [CERTIFICATES], ["certificatesigningrequests"])],
        "system:node": [
            _rule(READ, [""], ["pods", "services", "endpoints", "configmaps", "secrets", "nodes", "namespaces",
                               "persistentvolumeclaims", "persistentvolumes"]),
            _rule(READ, ["storage.k8s.io"], ["storageclasses"]),
            _rule(["create", "update", "patch"], [""], ["nodes", "nodes/status", "pods/status", "events"]),
            _rule(["delete"], [""], ["pods"]),
            _rule([*READ, "create", "update"], ["coordination.k8s.io"], ["leases"]),
            # its pods' usage reports, withdrawn once their containers are gone
            _rule(["create", "update"], ["metrics.k8s.io"], ["podmetrics", "nodemetrics"]),
            _rule(["delete"], ["metrics.k8s.io"], ["podmetrics"]),
            # renewing its own client certificate
            _rule([*READ, "create"], [CERTIFICATES], ["certificatesigningrequests"]),
            # its pods' projected tokens (only bound to pods on it: serviceaccount/tokenrequest.py)
            _rule(["get"], [""], ["serviceaccounts"]), SERVICE_ACCOUNT_TOKENS],
        # Leases: each proxy's LoadBalancer announcer elects one node per address (nodeagent/proxy/announcer.py).
        "system:kube-proxy": [_rule(READ, [""], ["services", "endpoints", "nodes"]), ENDPOINT_SLICES_READ,
                              _rule(["create"], [""], ["events"]),
                              _rule([*READ, "create", "update"], ["coordination.k8s.io"], ["leases"]),
                              # NetworkPolicy enforcement (nodeagent/netpol) runs in the proxy process, as
                              # kube-router's and Calico's agents do: policies, and the pods and namespaces
                              # their selectors pick.
                              NETWORK_POLICIES_READ, _rule(READ, [""], ["pods", "namespaces"])],
        # The ingress agent (nodeagent/ingress) runs in each node's proxy daemon, as its user: it
        # serves Ingresses with the Services, slices and TLS Secrets they name, writes their status,
        # and makes the default IngressClass if none exists.
        "system:flotilla-ingress": [
            _rule(READ, [NETWORKING], ["ingresses", "ingressclasses"]),
            _rule(["create"], [NETWORKING], ["ingressclasses"]),
            _rule(["update", "patch"], [NETWORKING], ["ingresses/status"]),
            _rule(READ, [""], ["services", "secrets", "nodes"]), ENDPOINT_SLICES_READ,
            _rule(["create", "patch"], [""], ["events"]),
            _rule([*READ, "create", "update"], ["coordination.k8s.io"], ["leases"])],
        "system:coredns": [_rule(READ, [""], ["services", "endpoints", "pods", "namespaces"]), ENDPOINT_SLICES_READ],
        "system:lb-controller": [_rule(READ, [""], ["services"]),
                                 _rule(["update", "patch"], [""], ["services/status"]),
                                 _rule(["create", "patch"], [""], ["events"]),
                                 _rule([*READ, "create", "update"], ["coordination.k8s.io"], ["leases"])],
        # What every signed-in user may ask about itself (`kubectl auth can-i`, `auth whoami`).
        "system:basic-user": [
            _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"])],
    }
    out = []
    for name, rules in roles.items():
        role = rbac_pb2.ClusterRole(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole", rules=rules)
        role.metadata.name = name
        role.metadata.labels["kubernetes.io/bootstrapping"] = "rbac-defaults"
        out.append(role)
    return out


def default_cluster_role_bindings() -> list[rbac_pb2.ClusterRoleBinding]:
    pairs = [("cluster-admin", "Group", MASTERS),
             ("system:kube-scheduler", "User", "system:kube-scheduler"),
             ("system:kube-controller-manager", "User", "system:kube-controller-manager"),
             ("system:node", "Group", "system:nodes"),
             ("system:node-bootstrapper", "Group", bootstrap.BOOTSTRAPPERS_GROUP),
             ("system:kube-proxy", "User", "system:kube-proxy"),
             ("system:coredns", "User", "system:coredns"),
             ("system:flotilla-ingress", "User", "system:kube-proxy"),
             ("system:lb-controller", "User", "system:lb-controller"),
             ("system:basic-user", "Group", AUTHENTICATED)]
    out = []
    for role, kind, subject in pairs:
        binding = rbac_pb2.ClusterRoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding")
        binding.metadata.name = role
        binding.metadata.labels["kubernetes.io/bootstrapping"] = "rbac-defaults"
        binding.subjects.add(kind=kind, name=subject,
                             api_group="rbac.authorization.k8s.io")
        binding.role_ref.api_group = "rbac.authorization.k8s.io"
        binding.role_ref.kind = "ClusterRole"
        binding.role_ref.name = role
        out.append(binding)
    return out


def cluster_info_reader() -> tuple[rbac_pb2.Role, rbac_pb2.RoleBinding]:
    """kubeadm's kube-public Role and binding letting a joining node read cluster-info (and nothing else)."""
    name = "kubeadm:bootstrap-signer-clusterinfo"
    role = rbac_pb2.Role(api_version="rbac.authorization.k8s.io/v1", kind="Role")
    role.metadata.name, role.metadata.namespace = name, bootstrap.CLUSTER_INFO_NAMESPACE
    role.rules.append(rbac_pb2.PolicyRule(verbs=["get"], api_groups=[""], resources=["configmaps"],
                                          resource_names=[bootstrap.CLUSTER_INFO_NAME]))
    binding = rbac_pb2.RoleBinding(api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding")
    binding.metadata.name, binding.metadata.namespace = name, bootstrap.CLUSTER_INFO_NAMESPACE
    binding.subjects.add(kind="Group", name=bootstrap.BOOTSTRAPPERS_GROUP, api_group="rbac.authorization.k8s.io")
    binding.role_ref.api_group, binding.role_ref.kind, binding.role_ref.name = (
        "rbac.authorization.k8s.io", "Role", name)
    for obj in (role, binding):
        obj.metadata.labels["kubernetes.io/bootstrapping"] = "rbac-defaults"
    return role, binding


async def ensure_default_policy(registry: Registry) -> None:
    """Create the default roles and bindings that are missing (never overwrite edits)."""
    await registry.ensure([*default_cluster_roles(), *default_cluster_role_bindings(), *cluster_info_reader()])


async def feed_from_registry(authorizer: RBACAuthorizer, registry: Registry) -> None:
    """Keep the authoriser's cache current from the registry's own watches."""
    synced = [asyncio.Event() for _ in RBAC_KINDS]
    tasks = [asyncio.create_task(registry.mirror(
                 kind, authorizer.observe, functools.partial(authorizer.forget, kind.kind), done))
             for kind, done in zip(map(kinds.resolve, RBAC_KINDS), synced, strict=True)]
    await asyncio.gather(*(e.wait() for e in synced))
    authorizer.synced.set()
    await asyncio.gather(*tasks)
