"""The scheduler cache: what every node has committed, including decisions not yet bound.

Informers say what the apiserver holds; but between a decision and the moment
the bound pod comes back through the watch there is a gap of milliseconds to
seconds, and the next decisions must not hand out the same capacity again. So,
as kube-scheduler's cache does:

- `assume(pod, node)` counts the pod on its node the moment it is decided;
- `forget(key)` takes it off again if its Binding fails;
- when the informer delivers the pod bound (`add_pod`/`update_pod`), the
  assumed entry is confirmed and from then on is an ordinary bound pod;
- `remove_pod` (deleted, or finished: Succeeded/Failed) frees its requests.

Pods may arrive before their node (lists of two informers race): they are
kept by node name and counted when the node appears. The columns the plugins
read live in `nodes` (a `NodeTable`); this module only keeps the books.
"""

from __future__ import annotations

import logging

from controlplane.scheduler.nodeinfo import NodeTable, PodInfo, PodRecord, scheduling_view
from proto import core_pb2

log = logging.getLogger(__name__)

TERMINAL_PHASES = ("Succeeded", "Failed")


def record_of(pod: PodInfo, node_name: str) -> PodRecord:
    return PodRecord(pod.key, pod.namespace, pod.labels, node_name, pod.requests, pod.nonzero, pod.anti_affinity,
                     pod.host_ports)


class Cache:
    def __init__(self) -> None:
        self.nodes = NodeTable()
        self._pods: dict[str, PodRecord] = {}  # every counted pod, by key
        self._by_node: dict[str, dict[str, PodRecord]] = {}  # node name -> its counted pods
        self._assumed: set[str] = set()

    # ---------------------------------------------------------------- nodes

    def add_node(self, node: core_pb2.Node) -> None:
        self.nodes.set_node(node, self._by_node.setdefault(node.metadata.name, {}))

    def update_node(self, old: core_pb2.Node, new: core_pb2.Node) -> bool:
        """Refresh the node; True when something a decision reads changed (heartbeats don't)."""
        if new.metadata.name in self.nodes and scheduling_view(old) == scheduling_view(new):
            return False
        self.add_node(new)
        return True

    def remove_node(self, node: core_pb2.Node) -> None:
        self.nodes.remove_node(node.metadata.name)
        # Its pods stay on the books: they are still bound there until their own deletion arrives.

    # ---------------------------------------------------------------- pods the informer reports

    def add_pod(self, pod: core_pb2.Pod) -> None:
        """A bound pod seen through the watch: count it (or confirm its assumption)."""
        if pod.status.phase in TERMINAL_PHASES:
            self.remove_pod(pod)
            return
        info = PodInfo.from_pod(pod)
        record = record_of(info, pod.spec.node_name)
        current = self._pods.get(info.key)
        self._assumed.discard(info.key)
        if current is not None and current == record:
            return  # the assumption confirmed, or an update that changes nothing counted
        if current is not None:
            self._remove(current)
        self._add(record)

    update_pod = add_pod

    def remove_pod(self, pod: core_pb2.Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        self._assumed.discard(key)
        record = self._pods.get(key)
        if record is not None:
            self._remove(record)

    # ---------------------------------------------------------------- the scheduler's own decisions

    def assume(self, pod: PodInfo, node_name: str) -> None:
        if pod.key in self._pods:
            raise ValueError(f"pod {pod.key} is already counted on {self._pods[pod.key].node_name}")
        self._add(record_of(pod, node_name))
        self._assumed.add(pod.key)

    def forget(self, key: str) -> None:
        """Undo `assume` (the Binding failed); a pod already confirmed bound stays."""
        if key in self._assumed:
            self._assumed.discard(key)
            record = self._pods.get(key)
            if record is not None:
                self._remove(record)

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    def counted(self, key: str) -> PodRecord | None:
        """The pod's entry if it is bound or assumed somewhere."""
        return self._pods.get(key)

    # ---------------------------------------------------------------- books

    def _add(self, record: PodRecord) -> None:
        self._pods[record.key] = record
        self._by_node.setdefault(record.node_name, {})[record.key] = record
        self.nodes.add_pod(record)

    def _remove(self, record: PodRecord) -> None:
        self._pods.pop(record.key, None)
        on_node = self._by_node.get(record.node_name)
        if on_node is not None:
            on_node.pop(record.key, None)
            if not on_node and record.node_name not in self.nodes:
                del self._by_node[record.node_name]
        self.nodes.remove_pod(record)
