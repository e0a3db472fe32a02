"""Node restriction: a kubelet's credentials reach only its own node's objects.

RBAC's `system:node` role lets nodes write Nodes, Leases and pod status in
general; this check (Kubernetes' Node authorizer and NodeRestriction admission
in one) narrows it to the caller's own: user `system:node:<name>` in group
`system:nodes` may change only Node `<name>` and Lease `kube-node-lease/<name>`,
only the status (or final deletion) of pods bound to `<name>`, and may read a
Secret or ConfigMap only when a pod bound to it uses that object. A stolen node
credential therefore cannot rewrite the rest of the cluster or read its secrets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from google.protobuf.message import Message

from controlplane.apiserver.auth import Attributes, UserInfo
from proto import core_pb2
from proto.errors import Forbidden

NAME = "NodeRestriction"
NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"


def node_of(user: UserInfo) -> str | None:
    """The node a caller speaks for, or None if it is not a node."""
    if NODES_GROUP in user.groups and user.name.startswith(NODE_PREFIX):
        return user.name[len(NODE_PREFIX):]
    return None


def _refuse(node: str, attrs: Attributes, why: str) -> Forbidden:
    what = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return Forbidden(f'{what} "{attrs.name}" is forbidden: User "{attrs.user.name}" cannot {attrs.verb} it: {why}')


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
    """

    NAME = NAME

    def __init__(self, pods_on_node: Callable[[str], Awaitable[Sequence[core_pb2.Pod]]]) -> None:
        self._pods_on_node = pods_on_node

    async def validate_request(self, attrs: Attributes) -> None:
        node = node_of(attrs.user)
        if node is None:
            return
        check_request(node, attrs)
        if attrs.verb == "get" and attrs.resource in ("secrets", "configmaps"):
            check_reference(node, attrs, await self._pods_on_node(node))

    def validate_stored(self, attrs: Attributes, stored: Message) -> None:
        node = node_of(attrs.user)
        if node is not None and attrs.resource == "pods":
            check_stored_pod(node, attrs, stored)
