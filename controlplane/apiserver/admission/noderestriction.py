"""Node restriction: a kubelet's credentials reach only its own node's objects.

RBAC's `system:node` role lets nodes write Nodes, Leases and pod status in
general; this check (Kubernetes' Node authorizer and NodeRestriction admission
in one) narrows it to the caller's own: user `system:node:<name>` in group
`system:nodes` may change only Node `<name>` and Lease `kube-node-lease/<name>`,
only the status (or final deletion) of pods bound to `<name>`, and may read a
Secret or ConfigMap only when a pod bound to it uses that object. A stolen node
credential therefore cannot rewrite the rest of the cluster or read its secrets.

Nor can it steer workloads to itself through its own Node (Kubernetes'
NodeRestriction, its rules and messages): a node registers with its taints
(the kubelet's --register-with-taints) but may not change them afterwards,
may not change its ownerReferences, and may set only the labels a kubelet
owns: anything outside the `kubernetes.io` / `k8s.io` namespaces, plus
hostname, os, arch, instance type, zone and region and the
`kubelet.kubernetes.io` / `node.kubernetes.io` prefixes, but never
`node-role.kubernetes.io/*` (what the control plane's pods select) nor
`node-restriction.kubernetes.io/*` (labels reserved for an admin to isolate
nodes). Roles are labelled by the admin (`kctl cluster up` does it).

Usage reports (metrics.k8s.io) follow the pods: a node publishes PodMetrics
only for pods bound to it, and withdraws only those, or those whose pod is
gone (the report outlived it; nobody else ran it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from google.protobuf.message import Message

from controlplane.apiserver.admission.interface import CREATE, UPDATE, Request
from controlplane.apiserver.auth import Attributes, UserInfo
from proto import core_pb2, wellknown
from proto.errors import Forbidden

NAME = "NodeRestriction"
NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"

# The labels a kubelet owns (k8s.io/kubelet's IsKubeletLabel): set at registration and kept current.
KUBELET_LABELS = frozenset({
    wellknown.LABEL_HOSTNAME, wellknown.LABEL_OS, wellknown.LABEL_ARCH,
    "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
    "node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
})
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
NODE_RESTRICTION_LABEL_NAMESPACE = "node-restriction.kubernetes.io"



class PodsQuery(Protocol):
    """Pods as stored now, in a namespace ("" for all) and matching a field selector."""

    def __call__(self, namespace: str, field_selector: str = "") -> Awaitable[Sequence[core_pb2.Pod]]: ...


def node_of(user: UserInfo) -> str | None:
    """The node a caller speaks for, or None if it is not a node."""
    if NODES_GROUP in user.groups and user.name.startswith(NODE_PREFIX):
        return user.name[len(NODE_PREFIX):]
    return None


def _refuse(node: str, attrs: Attributes, why: str) -> Forbidden:
    what = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return Forbidden(f'{what} "{attrs.name}" is forbidden: User "{attrs.user.name}" cannot {attrs.verb} it: {why}')


def _forbidden(attrs: Attributes, why: str) -> Forbidden:
    """Kubernetes' admission.NewForbidden: `<resource>[.<group>] "<name>" is forbidden: <why>`."""
    resource = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    return Forbidden(f'{resource} "{attrs.name}" is forbidden: {why}')


# ---------------------------------------------------------------- a node's own Node

def _label_namespace(key: str) -> str:
    return key.partition("/")[0] if "/" in key else ""


def _in_namespace(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def forbidden_labels(keys: Iterable[str]) -> list[str]:
    """Of these label keys, those a node may not set or change on its own Node (sorted, as Kubernetes lists them)."""
    refused = set()
    for key in keys:
        namespace = _label_namespace(key)
        if _in_namespace(namespace, NODE_RESTRICTION_LABEL_NAMESPACE):
            refused.add(key)
        kubernetes = _in_namespace(namespace, "kubernetes.io") or _in_namespace(namespace, "k8s.io")
        kubelet = key in KUBELET_LABELS or any(_in_namespace(namespace, ns) for ns in KUBELET_LABEL_NAMESPACES)
        if kubernetes and not kubelet:
            refused.add(key)
    return sorted(refused)


def modified_labels(new: Mapping[str, str], old: Mapping[str, str]) -> set[str]:
    """Keys added, removed or changed between two label sets."""
    return {k for k in {*new, *old} if k not in new or k not in old or new[k] != old[k]}


def check_node_write(node: str, attrs: Attributes, operation: str, new: core_pb2.Node,
                     old: core_pb2.Node | None) -> None:
    """A node creating or updating its own Node: registration labels, then no taint or role changes."""
    if operation == CREATE:
        refused = forbidden_labels(new.metadata.labels)
        if refused:
            raise _forbidden(attrs, f'node "{node}" is not allowed to set the following labels: {", ".join(refused)}')
    elif operation == UPDATE and old is not None:
        if list(new.spec.taints) != list(old.spec.taints):
            raise _forbidden(attrs, f'node "{node}" is not allowed to modify taints')
        if list(new.metadata.owner_references) != list(old.metadata.owner_references):
            raise _forbidden(attrs, f'node "{node}" is not allowed to modify ownerReferences')
        refused = forbidden_labels(modified_labels(new.metadata.labels, old.metadata.labels))
        if refused:
            # Kubernetes' own wording (sic: no subject).
            raise _forbidden(attrs, f'is not allowed to modify labels: {", ".join(refused)}')


# ---------------------------------------------------------------- requests

def check_request(node: str, attrs: Attributes) -> None:
    """What can be decided from the request alone (before anything is read)."""
    if attrs.resource in ("nodes", "nodemetrics") and attrs.verb in ("create", "update", "delete"):
        if attrs.name != node:
            raise _refuse(node, attrs, f"node {node} may only modify its own Node object")
    elif attrs.resource == "leases" and attrs.verb in ("create", "update", "delete"):
        if attrs.namespace != "kube-node-lease" or attrs.name != node:
            raise _refuse(node, attrs, f"node {node} may only modify its own Lease in kube-node-lease")
    elif attrs.resource == "pods" and attrs.verb == "create":
        raise _refuse(node, attrs, "nodes may not create pods")
    elif attrs.resource == "pods" and attrs.verb == "update" and attrs.subresource != "status":
        raise _refuse(node, attrs, "nodes may only update the status of pods")
    elif attrs.resource in ("secrets", "configmaps") and attrs.verb in ("list", "watch"):
        raise _refuse(node, attrs, f"nodes may only get the {attrs.resource} their pods use, by name")
    elif attrs.resource == "podmetrics" and attrs.verb in ("create", "update", "delete") and not attrs.name:
        raise _refuse(node, attrs, "nodes may only write or delete the metrics of their own pods, by name")


def check_pod_metrics(node: str, attrs: Attributes, pod: core_pb2.Pod | None) -> None:
    """A node's write or delete of PodMetrics <namespace>/<name>, given that pod as stored now (None: no such pod)."""
    if pod is not None and pod.spec.node_name == node:
        return
    if pod is None and attrs.verb == "delete":
        return  # the report outlived its pod: withdrawing it is what the pod's own node does next
    where = (f'bound to node "{pod.spec.node_name}"' if pod is not None and pod.spec.node_name
             else "not bound to any node" if pod is not None else "not found")
    what = "delete" if attrs.verb == "delete" else "write"
    raise _forbidden(attrs, f'node "{node}" can only {what} metrics of pods bound to it: pod '
                            f'"{attrs.namespace}/{attrs.name}" is {where}')


def check_stored_pod(node: str, attrs: Attributes, pod: Message) -> None:
    """Pod status updates and deletions: only for pods bound to this node."""
    if isinstance(pod, core_pb2.Pod) and pod.spec.node_name != node:
        raise _refuse(node, attrs, f"the pod is not bound to node {node}")


def pod_uses(pod: core_pb2.Pod, resource: str, name: str) -> bool:
    """Whether a pod mounts or reads the named Secret or ConfigMap."""
    for volume in pod.spec.volumes:
        if resource == "secrets" and volume.secret.secret_name == name:
            return True
        if resource == "configmaps" and volume.config_map.name == name:
            return True
        # A projected volume's sources count too: kube-api-access-* reads kube-root-ca.crt this way.
        for projection in volume.projected.sources:
            if resource == "secrets" and projection.HasField("secret") and projection.secret.name == name:
                return True
            if resource == "configmaps" and projection.HasField("config_map") and projection.config_map.name == name:
                return True
    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        for env in container.env:
            ref = env.value_from.secret_key_ref if resource == "secrets" else env.value_from.config_map_key_ref
            if ref.name == name:
                return True
        for source in container.env_from:
            ref_name = source.secret_ref.name if resource == "secrets" else source.config_map_ref.name
            if ref_name == name:
                return True
    if resource == "secrets":
        return any(s.name == name for s in pod.spec.image_pull_secrets)
    return False


def check_reference(node: str, attrs: Attributes, pods_on_node: Sequence[core_pb2.Pod]) -> None:
    if not any(pod.metadata.namespace == attrs.namespace and pod_uses(pod, attrs.resource, attrs.name)
               for pod in pods_on_node):
        raise _refuse(node, attrs, f"no pod bound to node {node} uses it")


class NodeRestriction:
    """The plugin: request checks for every node request, stored-pod checks for its writes.

    `pods_on_node(node)` lists the pods bound to a node as stored now: a node's
    read of a Secret or ConfigMap is checked against them, not against a cache.
    `stored_pods(namespace, field_selector)` finds the pod a PodMetrics report
    is about, the same way. A node's writes of its own Node are checked in
    `admit`, where the stored Node is at hand.
    """

    NAME = NAME

    def __init__(self, pods_on_node: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]],
                 stored_pods: PodsQuery) -> None:
        self._pods_on_node = pods_on_node
        self._stored_pods = stored_pods

    async def validate_request(self, attrs: Attributes) -> None:
        node = node_of(attrs.user)
        if node is None:
            return
        check_request(node, attrs)
        if attrs.verb == "get" and attrs.resource in ("secrets", "configmaps"):
            check_reference(node, attrs, await self._pods_on_node(node))
        elif attrs.resource == "podmetrics" and attrs.verb in ("create", "update", "delete"):
            found = await self._stored_pods(attrs.namespace, f"metadata.name={attrs.name}")
            check_pod_metrics(node, attrs, found[0] if found else None)

    def admit(self, request: Request) -> None:
        caller = request.caller
        node = node_of(caller.user) if caller is not None else None
        if node is not None and isinstance(request.obj, core_pb2.Node):
            old = request.old if isinstance(request.old, core_pb2.Node) else None
            check_node_write(node, caller, request.operation, request.obj, old)  # type: ignore[arg-type]

    def validate_stored(self, attrs: Attributes, stored: Message) -> None:
        node = node_of(attrs.user)
        if node is not None and attrs.resource == "pods":
            check_stored_pod(node, attrs, stored)
