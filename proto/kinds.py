"""The resource table: every kind the API serves, with its names and message type.

This is what `kubectl api-resources` prints and what every layer keys on: the
apiserver (etcd key prefix, namespaced or not, status subresource), the client
(which message class to decode), and kctl (short names such as `po`, `deploy`).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from proto import apps_pb2, autoscaling_pb2, certificates_pb2, coordination_pb2, core_pb2, metrics_pb2, rbac_pb2
from proto.errors import NotFound


@dataclass(frozen=True)
class Kind:
    """One served resource, as Kubernetes describes it in discovery."""

    kind: str
    resource: str  # plural, lower case: the name in URLs and etcd keys
    singular: str
    api_version: str  # "v1" for core, else "group/version"
    message: type[Message]
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = True  # False for kinds without a status subresource
    # Kept in the apiserver's memory, not etcd: usage reports (metrics.k8s.io), which
    # are replaced every few seconds. Get, list, create/update (upsert) and delete only.
    in_memory: bool = False

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def qualified_resource(self) -> str:
        """`deployments.apps`; core resources have no group suffix."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "namespaces", "namespace", "v1", core_pb2.Namespace, False, ("ns",)),
    Kind("Node", "nodes", "node", "v1", core_pb2.Node, False, ("no",)),
    Kind("Pod", "pods", "pod", "v1", core_pb2.Pod, True, ("po",)),
    Kind("Service", "services", "service", "v1", core_pb2.Service, True, ("svc",)),
    Kind("Endpoints", "endpoints", "endpoints", "v1", core_pb2.Endpoints, True, ("ep",), has_status=False),
    Kind("Event", "events", "event", "v1", core_pb2.Event, True, ("ev",), has_status=False),
    Kind("ConfigMap", "configmaps", "configmap", "v1", core_pb2.ConfigMap, True, ("cm",), has_status=False),
    Kind("Secret", "secrets", "secret", "v1", core_pb2.Secret, True, (), has_status=False),
    Kind("ResourceQuota", "resourcequotas", "resourcequota", "v1", core_pb2.ResourceQuota, True, ("quota",)),
    Kind("LimitRange", "limitranges", "limitrange", "v1", core_pb2.LimitRange, True, ("limits",),
         has_status=False),
    Kind("ReplicaSet", "replicasets", "replicaset", "apps/v1", apps_pb2.ReplicaSet, True, ("rs",)),
    Kind("Deployment", "deployments", "deployment", "apps/v1", apps_pb2.Deployment, True, ("deploy",)),
    Kind("Lease", "leases", "lease", "coordination.k8s.io/v1", coordination_pb2.Lease, True, (),
         has_status=False),
    Kind("HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", "autoscaling/v2",
         autoscaling_pb2.HorizontalPodAutoscaler, True, ("hpa",)),
    Kind("Role", "roles", "role", "rbac.authorization.k8s.io/v1", rbac_pb2.Role, True, (), has_status=False),
    Kind("ClusterRole", "clusterroles", "clusterrole", "rbac.authorization.k8s.io/v1", rbac_pb2.ClusterRole, False,
         (), has_status=False),
    Kind("RoleBinding", "rolebindings", "rolebinding", "rbac.authorization.k8s.io/v1", rbac_pb2.RoleBinding, True,
         (), has_status=False),
    Kind("ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", "rbac.authorization.k8s.io/v1",
         rbac_pb2.ClusterRoleBinding, False, (), has_status=False),
    Kind("CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest",
         "certificates.k8s.io/v1", certificates_pb2.CertificateSigningRequest, False, ("csr",)),
    # Kubernetes serves these as pods.metrics.k8s.io and nodes.metrics.k8s.io; the
    # plural names here keep `pods` and `nodes` meaning the core kinds.
    Kind("PodMetrics", "podmetrics", "podmetrics", "metrics.k8s.io/v1beta1", metrics_pb2.PodMetrics, True,
         (), has_status=False, in_memory=True),
    Kind("NodeMetrics", "nodemetrics", "nodemetrics", "metrics.k8s.io/v1beta1", metrics_pb2.NodeMetrics, False,
         (), has_status=False, in_memory=True),
)

_BY_NAME: dict[str, Kind] = {}
for _k in KINDS:
    for _name in (_k.resource, _k.singular, _k.kind.lower(), _k.qualified_resource, *_k.short_names):
        _BY_NAME[_name] = _k
_BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
_BY_MESSAGE: dict[str, Kind] = {k.message.DESCRIPTOR.full_name: k for k in KINDS}


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
