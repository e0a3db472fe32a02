"""The resource table: every kind the API serves, with its names and message type.

This is what `kubectl api-resources` prints and what every layer keys on: the
apiserver (etcd key prefix, namespaced or not, status subresource), the client
(which message class to decode), kctl (short names such as `po`, `deploy`), and the
HTTP API's discovery documents (controlplane/apiserver/http/discovery.py: verbs,
categories, subresources), so a kind added here is served and discoverable at once.

`KINDS` are the stored (or, for metrics, in-memory) objects every controller may
list; `REVIEWS` are the create-only questions (`kubectl auth can-i`, `auth whoami`)
that are answered at once and never stored, so nothing that lists kinds sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from proto import (
    admissionregistration_pb2,
    apiextensions_pb2,
    apps_pb2,
    authentication_pb2,
    authorization_pb2,
    autoscaling_pb2,
    batch_pb2,
    certificates_pb2,
    coordination_pb2,
    core_pb2,
    discovery_pb2,
    metrics_pb2,
    networking_pb2,
    policy_pb2,
    rbac_pb2,
    storage_pb2,
)
from proto.errors import NotFound

# Kubernetes' verbs, sorted as discovery lists them.
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_ONLY = ("get", "list")  # metrics.k8s.io, as metrics-server serves it
CREATE_ONLY = ("create",)  # the reviews
ALL_CATEGORY = ("all",)  # what `kubectl get all` lists


@dataclass(frozen=True)
class Subresource:
    """A path under one object (`pods/web/log`, `deployments/web/scale`), as discovery lists it."""

    name: str
    verbs: tuple[str, ...]
    kind: str = ""  # the kind its bodies carry; "" means the parent's
    api_version: str = ""  # "group/version" of that kind; "" means the parent's


STATUS = Subresource("status", ("get", "patch", "update"))
SCALE = Subresource("scale", ("get", "patch", "update"), "Scale", "autoscaling/v1")


@dataclass(frozen=True)
class Kind:
    """One served resource, as Kubernetes describes it in discovery."""

    kind: str
    resource: str  # plural, lower case: the name in etcd keys, RBAC rules and kctl
    singular: str
    api_version: str  # "v1" for core, else "group/version"
    message: type[Message]
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = True  # False for kinds without a status subresource
    # Kept in the apiserver's memory, not etcd: usage reports (metrics.k8s.io), which
    # are replaced every few seconds. Get, list, create/update (upsert) and delete only.
    in_memory: bool = False
    verbs: tuple[str, ...] = ALL_VERBS  # what discovery promises clients
    categories: tuple[str, ...] = ()
    scalable: bool = False  # has a `scale` subresource (autoscaling/v1 Scale)
    # Subresources besides status and scale (pods' log, exec, binding, eviction ...).
    extra_subresources: tuple[Subresource, ...] = ()
    # The plural in HTTP paths and discovery, where it differs from `resource`.
    served_as: str = ""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def qualified_resource(self) -> str:
        """`deployments.apps`; core resources have no group suffix."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def http_resource(self) -> str:
        """The plural clients use in URLs: `pods` for metrics.k8s.io's PodMetrics."""
        return self.served_as or self.resource

    @property
    def storage_resource(self) -> str:
        """The resource's segment of its etcd keys, `/registry/<this>/...`: custom resources add their group."""
        return self.resource

    @property
    def subresources(self) -> tuple[Subresource, ...]:
        """Every subresource, sorted by name as Kubernetes lists them."""
        found = [*self.extra_subresources]
        if self.has_status:
            found.append(STATUS)
        if self.scalable:
            found.append(SCALE)
        return tuple(sorted(found, key=lambda s: s.name))


# What a pod serves under its name besides status (kubectl logs, exec, attach,
# port-forward, drain; the scheduler's binding).
POD_SUBRESOURCES = (
    Subresource("attach", ("create", "get"), "PodAttachOptions"),
    Subresource("binding", CREATE_ONLY, "Binding"),
    Subresource("eviction", CREATE_ONLY, "Eviction", "policy/v1"),
    Subresource("exec", ("create", "get"), "PodExecOptions"),
    Subresource("log", ("get",)),
    Subresource("portforward", ("create", "get"), "PodPortForwardOptions"),
)

# serviceaccounts/<name>/token: an authentication.k8s.io/v1 TokenRequest, answered and never stored.
TOKEN = Subresource("token", CREATE_ONLY, "TokenRequest", "authentication.k8s.io/v1")

KINDS: tuple[Kind, ...] = (
    # Kubernetes has no deletecollection of namespaces: emptying a cluster takes one at a time.
    Kind("Namespace", "namespaces", "namespace", "v1", core_pb2.Namespace, False, ("ns",),
         verbs=tuple(v for v in ALL_VERBS if v != "deletecollection")),
    Kind("Node", "nodes", "node", "v1", core_pb2.Node, False, ("no",)),
    Kind("Pod", "pods", "pod", "v1", core_pb2.Pod, True, ("po",), categories=ALL_CATEGORY,
         extra_subresources=POD_SUBRESOURCES),
    Kind("Service", "services", "service", "v1", core_pb2.Service, True, ("svc",), categories=ALL_CATEGORY),
    Kind("Endpoints", "endpoints", "endpoints", "v1", core_pb2.Endpoints, True, ("ep",), has_status=False),
    Kind("Event", "events", "event", "v1", core_pb2.Event, True, ("ev",), has_status=False),
    Kind("ConfigMap", "configmaps", "configmap", "v1", core_pb2.ConfigMap, True, ("cm",), has_status=False),
    Kind("Secret", "secrets", "secret", "v1", core_pb2.Secret, True, (), has_status=False),
    # Pods' identities; `token` mints a bound token for one (kubectl create token, the kubelet).
    Kind("ServiceAccount", "serviceaccounts", "serviceaccount", "v1", core_pb2.ServiceAccount, True, ("sa",),
         has_status=False, extra_subresources=(TOKEN,)),
    Kind("ResourceQuota", "resourcequotas", "resourcequota", "v1", core_pb2.ResourceQuota, True, ("quota",)),
    Kind("LimitRange", "limitranges", "limitrange", "v1", core_pb2.LimitRange, True, ("limits",),
         has_status=False),
    # Storage: volumes are cluster-wide (as nodes), claims belong to a namespace (as pods).
    Kind("PersistentVolume", "persistentvolumes", "persistentvolume", "v1", core_pb2.PersistentVolume, False,
         ("pv",)),
    Kind("PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", "v1",
         core_pb2.PersistentVolumeClaim, True, ("pvc",)),
    Kind("ReplicaSet", "replicasets", "replicaset", "apps/v1", apps_pb2.ReplicaSet, True, ("rs",),
         categories=ALL_CATEGORY, scalable=True),
    Kind("Deployment", "deployments", "deployment", "apps/v1", apps_pb2.Deployment, True, ("deploy",),
         categories=ALL_CATEGORY, scalable=True),
    Kind("DaemonSet", "daemonsets", "daemonset", "apps/v1", apps_pb2.DaemonSet, True, ("ds",),
         categories=ALL_CATEGORY),
    Kind("StatefulSet", "statefulsets", "statefulset", "apps/v1", apps_pb2.StatefulSet, True, ("sts",),
         categories=ALL_CATEGORY, scalable=True),
    # Written by the DaemonSet (and StatefulSet) controllers; no status, and kubectl's
    # `rollout history` reads them.
    Kind("ControllerRevision", "controllerrevisions", "controllerrevision", "apps/v1", apps_pb2.ControllerRevision,
         True, (), has_status=False),
    Kind("Job", "jobs", "job", "batch/v1", batch_pb2.Job, True, categories=ALL_CATEGORY),
    Kind("CronJob", "cronjobs", "cronjob", "batch/v1", batch_pb2.CronJob, True, ("cj",), categories=ALL_CATEGORY),
    Kind("PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", "policy/v1",
         policy_pb2.PodDisruptionBudget, True, ("pdb",)),
    # Written by the endpointslice controller for Services with a selector (by hand for others);
    # the successor of Endpoints, and what proxies, DNS and ingress controllers read.
    Kind("EndpointSlice", "endpointslices", "endpointslice", "discovery.k8s.io/v1", discovery_pb2.EndpointSlice,
         True, (), has_status=False),
    # HTTP routing from outside: Ingresses name a class, whose controller (Flotilla's:
    # nodeagent/ingress, flotilla.dev/ingress-haproxy) serves them and writes their status.
    Kind("Ingress", "ingresses", "ingress", "networking.k8s.io/v1", networking_pb2.Ingress, True, ("ing",)),
    Kind("IngressClass", "ingressclasses", "ingressclass", "networking.k8s.io/v1", networking_pb2.IngressClass,
         False, (), has_status=False),
    # Which traffic may reach (and leave) the pods it selects; every node's proxy process
    # enforces them for its own pods (nodeagent/netpol). No status.
    Kind("NetworkPolicy", "networkpolicies", "networkpolicy", "networking.k8s.io/v1", networking_pb2.NetworkPolicy,
         True, ("netpol",), has_status=False),
    Kind("StorageClass", "storageclasses", "storageclass", "storage.k8s.io/v1", storage_pb2.StorageClass, False,
         ("sc",), has_status=False),
    Kind("Lease", "leases", "lease", "coordination.k8s.io/v1", coordination_pb2.Lease, True, (),
         has_status=False),
    Kind("HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", "autoscaling/v2",
         autoscaling_pb2.HorizontalPodAutoscaler, True, ("hpa",), categories=ALL_CATEGORY),
    Kind("Role", "roles", "role", "rbac.authorization.k8s.io/v1", rbac_pb2.Role, True, (), has_status=False),
    Kind("ClusterRole", "clusterroles", "clusterrole", "rbac.authorization.k8s.io/v1", rbac_pb2.ClusterRole, False,
         (), has_status=False),
    Kind("RoleBinding", "rolebindings", "rolebinding", "rbac.authorization.k8s.io/v1", rbac_pb2.RoleBinding, True,
         (), has_status=False),
    Kind("ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", "rbac.authorization.k8s.io/v1",
         rbac_pb2.ClusterRoleBinding, False, (), has_status=False),
    # Admission webhooks the apiserver calls on writes (controlplane/apiserver/admission/webhook/);
    # kubectl's `api-extensions` category, as CRDs.
    Kind("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration",
         "admissionregistration.k8s.io/v1", admissionregistration_pb2.MutatingWebhookConfiguration, False,
         has_status=False, categories=("api-extensions",)),
    Kind("ValidatingWebhookConfiguration", "validatingwebhookconfigurations", "validatingwebhookconfiguration",
         "admissionregistration.k8s.io/v1", admissionregistration_pb2.ValidatingWebhookConfiguration, False,
         has_status=False, categories=("api-extensions",)),
    Kind("CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest",
         "certificates.k8s.io/v1", certificates_pb2.CertificateSigningRequest, False, ("csr",),
         extra_subresources=(Subresource("approval", ("get", "patch", "update")),)),
    # Kinds users add (controlplane/apiserver/crd/); their objects are served once it is Established.
    Kind("CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition",
         "apiextensions.k8s.io/v1", apiextensions_pb2.CustomResourceDefinition, False, ("crd", "crds"),
         categories=("api-extensions",)),
    # Kubernetes serves these as pods.metrics.k8s.io and nodes.metrics.k8s.io (so over
    # HTTP, `served_as`); the registry's names keep `pods` and `nodes` meaning the core
    # kinds. Clients only read them; kubelets write theirs over gRPC.
    Kind("PodMetrics", "podmetrics", "podmetrics", "metrics.k8s.io/v1beta1", metrics_pb2.PodMetrics, True,
         (), has_status=False, in_memory=True, verbs=READ_ONLY, served_as="pods"),
    Kind("NodeMetrics", "nodemetrics", "nodemetrics", "metrics.k8s.io/v1beta1", metrics_pb2.NodeMetrics, False,
         (), has_status=False, in_memory=True, verbs=READ_ONLY, served_as="nodes"),
)


def _review(kind: str, group_version: str, message: type[Message]) -> Kind:
    """A cluster-scoped, create-only kind whose status is the answer (no status subresource)."""
    return Kind(kind, f"{kind.lower()}s", kind.lower(), group_version, message, False, has_status=False,
                verbs=CREATE_ONLY)


# Questions put to the apiserver: POSTed, answered with their status filled in, never
# stored (controlplane/apiserver/subresources/reviews.py answers them).
REVIEWS: tuple[Kind, ...] = (
    _review("SelfSubjectAccessReview", "authorization.k8s.io/v1", authorization_pb2.SelfSubjectAccessReview),
    _review("SelfSubjectRulesReview", "authorization.k8s.io/v1", authorization_pb2.SelfSubjectRulesReview),
    _review("SubjectAccessReview", "authorization.k8s.io/v1", authorization_pb2.SubjectAccessReview),
    _review("SelfSubjectReview", "authentication.k8s.io/v1", authentication_pb2.SelfSubjectReview),
    _review("TokenReview", "authentication.k8s.io/v1", authentication_pb2.TokenReview),
)

# Everything the HTTP API serves, in discovery's order.
SERVED: tuple[Kind, ...] = KINDS + REVIEWS

_BY_NAME: dict[str, Kind] = {}
for _k in KINDS:
    for _name in (_k.resource, _k.singular, _k.kind.lower(), _k.qualified_resource, *_k.short_names):
        _BY_NAME[_name] = _k
_BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
_BY_MESSAGE: dict[str, Kind] = {k.message.DESCRIPTOR.full_name: k for k in SERVED}
_BY_REVIEW: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in REVIEWS}
_BY_HTTP_RESOURCE: dict[tuple[str, str], Kind] = {(k.group, k.http_resource): k for k in SERVED}


def resolve(name: str) -> Kind:
    """The kind a user or client means by `pods`, `pod`, `po`, `Pod` or `deployments.apps`."""
    kind = _BY_NAME.get(name.lower())
    if kind is None:
        raise NotFound(f'the server doesn\'t have a resource type "{name}"')
    return kind


def for_kind(api_version: str, kind: str) -> Kind:
    """The kind a manifest's apiVersion + kind name (as in `kind: Deployment`)."""
    found = _BY_KIND.get(kind)
    if found is None:
        raise NotFound(f'no matches for kind "{kind}" in version "{api_version}"')
    if api_version and api_version != found.api_version:
        raise NotFound(f'no matches for kind "{kind}" in version "{api_version}"')
    return found


def for_message(message: Message) -> Kind:
    """The kind of a decoded object."""
    return _BY_MESSAGE[message.DESCRIPTOR.full_name]


def review(api_version: str, kind: str) -> Kind | None:
    """The review kind a request body names (`authorization.k8s.io/v1`, `SelfSubjectAccessReview`)."""
    return _BY_REVIEW.get((api_version, kind))


def served(group: str, resource: str) -> Kind | None:
    """The kind an HTTP path or an access review means by group and plural (`metrics.k8s.io`, `pods`)."""
    return _BY_HTTP_RESOURCE.get((group, resource))
