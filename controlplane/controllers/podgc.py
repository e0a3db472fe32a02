"""The pod garbage collector: force-deletes pods bound to nodes that no longer exist.

A pod bound to a node is deleted gracefully: the apiserver keeps it, terminating,
until that node's kubelet has stopped its containers. When the Node object
itself is gone there is no kubelet left to finish, and the pod would be
Terminating for ever (and hold its namespace's deletion with it). Kubernetes'
PodGC deletes such orphans with grace 0; so does this. Absence is confirmed
with a live read, since a new node can reach a pod's informer before its own.
"""

from __future__ import annotations

import logging

from client import Client, InformerFactory, field_index, key_of
from client.controller import Controller
from controlplane.controllers.nodelifecycle import NODE_NAME_INDEX
from proto import core_pb2
from proto.errors import Conflict, NotFound

log = logging.getLogger(__name__)


class PodGarbageCollector(Controller):
    name = "podgc"

    def __init__(self, client: Client, factory: InformerFactory, *, workers: int = 2) -> None:
        super().__init__(client, factory, workers=workers)
        self.nodes = factory.informer(core_pb2.Node)
        self.pods = factory.informer(core_pb2.Pod)
        self.pods.store.add_index(NODE_NAME_INDEX, field_index("spec.nodeName"))
        self.informers = [self.nodes, self.pods]
        self.nodes.add_handler(on_delete=self._node_deleted)
        self.pods.add_handler(on_add=self._pod_seen, on_update=lambda _o, n: self._pod_seen(n))

    def _node_deleted(self, node: core_pb2.Node) -> None:
        for pod in self.pods.store.list_by_index(NODE_NAME_INDEX, node.metadata.name):
            self.queue.add(key_of(pod))

    def _pod_seen(self, pod: core_pb2.Pod) -> None:
        if pod.spec.node_name and self.nodes.store.get(pod.spec.node_name) is None:
            self.queue.add(key_of(pod))

    async def sync(self, key: str) -> None:
        pod = self.pods.store.get(key)
        if pod is None or not pod.spec.node_name or self.nodes.store.get(pod.spec.node_name) is not None:
            return
        try:
            await self.client.get(core_pb2.Node, pod.spec.node_name)
            return  # the node exists; our cache is behind
        except NotFound:
            pass
        try:
            await self.client.delete(core_pb2.Pod, pod.metadata.name, pod.metadata.namespace,
                                     grace_period_seconds=0, uid=pod.metadata.uid)
        except (NotFound, Conflict):
            return
        log.info("deleted pod %s: its node %s is gone", key, pod.spec.node_name)
