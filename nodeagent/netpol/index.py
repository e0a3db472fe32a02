"""What NetworkPolicy selectors are evaluated against: the cluster's pods and namespaces, indexed.

A policy's podSelector picks pods of its namespace; its peers pick pods of
other namespaces by namespace labels and pod labels. Evaluated naively that is
policies x pods label checks on every change (5 million at 1,000 policies over
5,000 pods). So pods are indexed by namespace and by (namespace, label, value):
a selector starts from the smallest candidate set its equality (or In)
requirements give, and only those candidates are checked in full.

Only what enforcement needs is kept per pod (`PodInfo`): its IP, labels, node
and named container ports. Pods without an IP, on the host's network, or
finished (their IP may already be another pod's) are left out: policies neither
apply to them nor match them as peers, as Kubernetes leaves host-network pods
undefined.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from proto import core_pb2
from proto.selectors import LabelSelector


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    ip: str
    node: str
    labels: tuple[tuple[str, str], ...]  # sorted items: hashable, so two infos compare by value
    ports: tuple[tuple[str, str, int], ...] = ()  # named container ports: (name, protocol, number)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number of this pod's container port `name` for `protocol`, if it has one."""
        for port_name, port_protocol, number in self.ports:
            if port_name == name and port_protocol == protocol:
                return number
        return None


def pod_info(pod: core_pb2.Pod) -> PodInfo | None:
    """What enforcement needs of `pod`, or None when policies leave it out."""
    if pod.spec.host_network or not pod.status.pod_ip or pod.status.phase in ("Succeeded", "Failed"):
        return None
    ports = sorted((p.name, p.protocol or "TCP", p.container_port)
                   for c in (*pod.spec.init_containers, *pod.spec.containers) for p in c.ports if p.name)
    return PodInfo(pod.metadata.namespace, pod.metadata.name, pod.status.pod_ip, pod.spec.node_name,
                   tuple(sorted(pod.metadata.labels.items())), tuple(ports))


@dataclass
class ClusterIndex:
    """Pods (by key) and namespaces (by name, their labels), with the indexes selectors use."""

    pods: dict[str, PodInfo] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    _by_namespace: dict[str, set[str]] = field(default_factory=dict)
    _by_label: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)

    def set_pod(self, key: str, info: PodInfo | None) -> PodInfo | None:
        """Record `info` for pod `key` (None: it is gone or left out); returns what was recorded before."""
        old = self.pods.pop(key, None)
        if old is not None:
            self._by_namespace[old.namespace].discard(key)
            for label, value in old.labels:
                self._by_label[(old.namespace, label, value)].discard(key)
        if info is not None:
            self.pods[key] = info
            self._by_namespace.setdefault(info.namespace, set()).add(key)
            for label, value in info.labels:
                self._by_label.setdefault((info.namespace, label, value), set()).add(key)
        return old

    def set_namespace(self, name: str, labels: Mapping[str, str] | None) -> None:
        if labels is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = dict(labels)

    def select_namespaces(self, selector: LabelSelector) -> list[str]:
        """Names of the namespaces `selector` picks (namespaces are few: checked one by one)."""
        return sorted(name for name, labels in self.namespaces.items() if selector.matches(labels))

    def select_pods(self, namespace: str, selector: LabelSelector) -> Iterable[PodInfo]:
        """The pods of `namespace` that `selector` picks."""
        candidates: set[str] | None = None
        for req in selector.requirements:
            if req.operator in ("=", "in"):
                found: set[str] = set()
                for value in req.values:
                    found |= self._by_label.get((namespace, req.key, value), set())
                if candidates is None or len(found) < len(candidates):
                    candidates = found
        if candidates is None:
            candidates = self._by_namespace.get(namespace, set())
        pods = (self.pods[key] for key in candidates)
        exact = not selector.requirements or (len(selector.requirements) == 1
                                              and selector.requirements[0].operator in ("=", "in"))
        # Empty, or a single equality/In requirement: the index lookup was the whole check.
        return list(pods) if exact else [info for info in pods if selector.matches(info.label_map())]
