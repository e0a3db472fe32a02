"""The scheduler's view of the cluster as plain data: `PodInfo` and the `NodeTable`.

This is the read-only state the placement decision runs over (Nomad's state
view, kube-scheduler's NodeInfo snapshot), kept apart from the informers that
fill it and from the API calls that act on its answer, so every plugin is a
pure function of (pod, table) that a test can call with no server.

The table is columnar: one row per node, and the numbers every decision
reads — allocatable and requested cpu (millicores), memory (bytes) and pod
count — live in numpy arrays, so a filter or score over 5,000 nodes is a
handful of vector operations instead of 5,000 Python calls. What numbers
cannot say (labels, taints) stays in per-node Python objects, and plugins that
need them cache their per-node answers until `generation` changes (a node
added, removed, relabelled, tainted, cordoned or changing readiness); resource
changes, which happen on every decision, do not bump it.

Rows are kept dense: removing a node moves the last row into its place, so
`[:len(table)]` is always exactly the live nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import numpy as np

from proto import core_pb2, meta_pb2, selectors
from proto.quantity import QuantityError, int_value, milli_value

CPU, MEMORY, PODS = 0, 1, 2
MAX_NODE_SCORE = 100  # every normalised score is in [0, MAX_NODE_SCORE]

# kube-scheduler scores a container without requests as if it asked for this much
# (util.DefaultMilliCPURequest / DefaultMemoryRequest), so best-effort pods still spread.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

READY, NOT_READY, UNKNOWN = 1, 0, -1
HARD_EFFECTS = ("NoSchedule", "NoExecute")

Vector = np.ndarray


# ---------------------------------------------------------------- pods


@dataclass(frozen=True)
class TolerationInfo:
    key: str
    operator: str  # Equal (the default) or Exists
    value: str
    effect: str  # "" tolerates every effect

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        """Kubernetes' Toleration.ToleratesTaint."""
        if self.effect and self.effect != effect:
            return False
        if self.key and self.key != key:
            return False
        if self.operator == "Exists":
            return True
        return self.value == value


@dataclass(frozen=True)
class SpreadConstraint:
    max_skew: int
    topology_key: str
    when_unsatisfiable: str  # DoNotSchedule or ScheduleAnyway
    selector: selectors.LabelSelector


@dataclass(frozen=True)
class AffinityTerm:
    """A pod (anti-)affinity term: pods matching `selector` in `namespaces`, within `topology_key`."""

    selector: selectors.LabelSelector
    namespaces: frozenset[str]
    topology_key: str
    weight: int = 0  # for preferred terms


def tolerated(tolerations: tuple[TolerationInfo, ...], key: str, value: str, effect: str) -> bool:
    return any(t.tolerates(key, value, effect) for t in tolerations)


@dataclass(frozen=True)
class HostPort:
    """A port a container takes on its node's own network (hostPort)."""

    protocol: str
    host_ip: str
    port: int

    def conflicts(self, other: HostPort) -> bool:
        # 0.0.0.0 (or unset) takes the port on every address, so it clashes with any.
        wildcard = ("", "0.0.0.0", "::")
        return (self.protocol, self.port) == (other.protocol, other.port) and (
            self.host_ip == other.host_ip or self.host_ip in wildcard or other.host_ip in wildcard)


NodeTerm = tuple[selectors.LabelSelector, tuple[tuple[str, tuple[str, ...]], ...]]
"""A NodeSelectorTerm: label requirements, plus matchFields on metadata.name as (operator, names)."""


@dataclass(frozen=True)
class PodInfo:
    """What the scheduler needs from a Pod, parsed once per scheduling attempt."""

    key: str
    namespace: str
    name: str
    uid: str
    priority: int
    labels: dict[str, str]
    node_name: str
    # cpu millicores, memory bytes, pod count: what NodeResourcesFit checks
    requests: tuple[int, int, int]
    # the same with kube's defaults for unset requests: what scoring uses
    nonzero: tuple[int, int]
    node_selector: tuple[tuple[str, str], ...] = ()
    required_terms: tuple[NodeTerm, ...] | None = None  # None: no required node affinity
    preferred_terms: tuple[tuple[int, NodeTerm], ...] = ()
    tolerations: tuple[TolerationInfo, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    anti_affinity: tuple[AffinityTerm, ...] = ()
    preferred_anti_affinity: tuple[AffinityTerm, ...] = ()
    affinity: tuple[AffinityTerm, ...] = ()
    preferred_affinity: tuple[AffinityTerm, ...] = ()
    host_ports: tuple[HostPort, ...] = ()

    @classmethod
    def from_pod(cls, pod: core_pb2.Pod) -> PodInfo:
        spec, meta = pod.spec, pod.metadata
        affinity = spec.affinity
        node_affinity = affinity.node_affinity
        required = None
        if node_affinity.HasField("required_during_scheduling_ignored_during_execution"):
            required = tuple(_node_term(t) for t in
                             node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms)
        preferred = tuple((p.weight, _node_term(p.preference))
                          for p in node_affinity.preferred_during_scheduling_ignored_during_execution)
        spread = tuple(
            SpreadConstraint(c.max_skew or 1, c.topology_key, c.when_unsatisfiable or "DoNotSchedule",
                             selectors.from_message(c.label_selector if c.HasField("label_selector") else None))
            for c in spec.topology_spread_constraints)
        anti, attract = affinity.pod_anti_affinity, affinity.pod_affinity
        cpu, mem, nz_cpu, nz_mem = pod_requests(spec)
        return cls(
            key=f"{meta.namespace}/{meta.name}", namespace=meta.namespace, name=meta.name, uid=meta.uid,
            priority=spec.priority if spec.HasField("priority") else 0, labels=dict(meta.labels),
            node_name=spec.node_name, requests=(cpu, mem, 1), nonzero=(nz_cpu, nz_mem),
            node_selector=tuple(sorted(spec.node_selector.items())),
            required_terms=required, preferred_terms=preferred,
            tolerations=tuple(TolerationInfo(t.key, t.operator or "Equal", t.value, t.effect)
                              for t in spec.tolerations),
            spread=spread,
            anti_affinity=tuple(_affinity_term(t, meta.namespace)
                                for t in anti.required_during_scheduling_ignored_during_execution),
            preferred_anti_affinity=tuple(
                _affinity_term(w.pod_affinity_term, meta.namespace, w.weight)
                for w in anti.preferred_during_scheduling_ignored_during_execution),
            affinity=tuple(_affinity_term(t, meta.namespace)
                           for t in attract.required_during_scheduling_ignored_during_execution),
            preferred_affinity=tuple(
                _affinity_term(w.pod_affinity_term, meta.namespace, w.weight)
                for w in attract.preferred_during_scheduling_ignored_during_execution),
            host_ports=tuple(HostPort(p.protocol or "TCP", p.host_ip, p.host_port)
                             for c in (*spec.init_containers, *spec.containers) for p in c.ports if p.host_port),
        )


def _node_term(term: core_pb2.NodeSelectorTerm) -> NodeTerm:
    # NodeSelectorRequirement has LabelSelectorRequirement's shape plus Gt/Lt, which the
    # one selector matcher already understands: reuse it rather than match labels twice.
    message = meta_pb2.LabelSelector(match_expressions=[
        meta_pb2.LabelSelectorRequirement(key=r.key, operator=r.operator, values=list(r.values))
        for r in term.match_expressions])
    fields = tuple((r.operator, tuple(r.values)) for r in term.match_fields if r.key == "metadata.name")
    if not term.match_expressions and not term.match_fields:
        # An empty term selects no node (an empty LabelSelector would select all).
        return selectors.NOTHING, ()
    return selectors.from_message(message), fields


def _affinity_term(term: core_pb2.PodAffinityTerm, namespace: str, weight: int = 0) -> AffinityTerm:
    sel = selectors.from_message(term.label_selector if term.HasField("label_selector") else None)
    return AffinityTerm(sel, frozenset(term.namespaces or [namespace]), term.topology_key, weight)


def node_term_matches(term: NodeTerm, name: str, labels: dict[str, str]) -> bool:
    label_selector, fields = term
    if not label_selector.matches(labels):
        return False
    for operator, names in fields:
        if (operator == "In") != (name in names):
            return False
    return True


def matches_node_selector(pod: PodInfo, labels: dict[str, str]) -> bool:
    """spec.nodeSelector: every listed label on the node, with that value."""
    return all(labels.get(k) == v for k, v in pod.node_selector)


def matches_required_affinity(pod: PodInfo, name: str, labels: dict[str, str]) -> bool:
    """Required node affinity: any one of its terms (no affinity: every node)."""
    return pod.required_terms is None or any(node_term_matches(t, name, labels) for t in pod.required_terms)


def _quantity(values: object, resource: str, milli: bool) -> int:
    text = values.get(resource) if hasattr(values, "get") else None
    if not text:
        return 0
    try:
        return milli_value(text) if milli else int_value(text)
    except QuantityError:
        return 0  # the apiserver validates quantities; a bad one requests nothing


def pod_requests(spec: core_pb2.PodSpec) -> tuple[int, int, int, int]:
    """(cpu m, memory bytes, nonzero cpu m, nonzero memory) a pod asks for, as kube computes it.

    Regular containers and restartable init containers (sidecars) run together, so
    they add up; a classic init container runs alone (beside the sidecars started
    before it), so the pod needs the larger of that and the sum.
    """
    def one(c: core_pb2.Container) -> tuple[int, int, int, int]:
        req = c.resources.requests
        cpu, mem = _quantity(req, "cpu", True), _quantity(req, "memory", False)
        return cpu, mem, cpu or DEFAULT_MILLI_CPU_REQUEST, mem or DEFAULT_MEMORY_REQUEST

    total = [0, 0, 0, 0]
    for container in spec.containers:
        total = [a + b for a, b in zip(total, one(container), strict=True)]
    sidecars = [0, 0, 0, 0]
    peak = [0, 0, 0, 0]
    for container in spec.init_containers:
        values = one(container)
        if container.restart_policy == "Always":
            sidecars = [a + b for a, b in zip(sidecars, values, strict=True)]
        else:
            peak = [max(p, s + v) for p, s, v in zip(peak, sidecars, values, strict=True)]
    total = [max(t + s, p) for t, s, p in zip(total, sidecars, peak, strict=True)]
    return total[0], total[1], total[2], total[3]


# ---------------------------------------------------------------- nodes


@dataclass(frozen=True)
class TaintInfo:
    key: str
    value: str
    effect: str

    def describe(self) -> str:
        # kube-scheduler's wording: "node(s) had untolerated taint {key: value}"
        return f"{{{self.key}: {self.value}}}"


@dataclass
class NodeInfo:
    """The parts of a Node the vector columns cannot hold."""

    name: str
    labels: dict[str, str]
    taints: tuple[TaintInfo, ...]
    unschedulable: bool
    ready: int  # READY, NOT_READY or UNKNOWN
    pods: dict[str, PodRecord] = field(default_factory=dict)

    def hard_taints(self) -> Iterator[TaintInfo]:
        return (t for t in self.taints if t.effect in HARD_EFFECTS)


@dataclass(frozen=True)
class PodRecord:
    """A pod counted on a node (bound, or assumed while its Binding is in flight)."""

    key: str
    namespace: str
    labels: dict[str, str]
    node_name: str
    requests: tuple[int, int, int]
    nonzero: tuple[int, int]
    anti_affinity: tuple[AffinityTerm, ...] = ()
    host_ports: tuple[HostPort, ...] = ()


def node_ready(node: core_pb2.Node) -> int:
    for condition in node.status.conditions:
        if condition.type == "Ready":
            return {"True": READY, "False": NOT_READY}.get(condition.status, UNKNOWN)
    return UNKNOWN


def node_allocatable(node: core_pb2.Node) -> tuple[int, int, int]:
    # Allocatable is what the kubelet offers pods; a node that reports only capacity offers all of it.
    status = node.status
    values = status.allocatable if status.allocatable else status.capacity
    return _quantity(values, "cpu", True), _quantity(values, "memory", False), _quantity(values, "pods", False)


def scheduling_view(node: core_pb2.Node) -> tuple[object, ...]:
    """What about a node can change a decision; a node update that keeps it changes nothing."""
    return (dict(node.metadata.labels), tuple((t.key, t.value, t.effect) for t in node.spec.taints),
            node.spec.unschedulable, node_ready(node), node_allocatable(node))


class NodeTable:
    """Every node's columns and details, dense rows, indexed by name."""

    def __init__(self, capacity: int = 64) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.infos: list[NodeInfo] = []
        self.allocatable = np.zeros((capacity, 3), dtype=np.int64)
        self.requested = np.zeros((capacity, 3), dtype=np.int64)
        self.nonzero_requested = np.zeros((capacity, 2), dtype=np.int64)
        self.unschedulable = np.zeros(capacity, dtype=bool)
        self.ready = np.zeros(capacity, dtype=np.int8)
        self.has_hard_taints = np.zeros(capacity, dtype=bool)
        self.prefer_no_schedule = np.zeros(capacity, dtype=np.int64)  # count of PreferNoSchedule taints
        # Bumped whenever anything but resource use changes: plugins' per-node caches key on it.
        self.generation = 0
        # Pods (bound or assumed) with required anti-affinity terms, which every later pod must respect.
        self.anti_affinity_pods: dict[str, PodRecord] = {}
        # Pods using host ports, which NodePorts checks against (few: most pods use none).
        self.host_port_pods: dict[str, PodRecord] = {}
        self._domains: dict[str, Vector] = {}
        self._domains_generation = -1

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def info(self, name: str) -> NodeInfo | None:
        row = self.index.get(name)
        return self.infos[row] if row is not None else None

    # ---------------------------------------------------------------- writes (the cache's)

    def _grow(self) -> None:
        size = max(64, 2 * self.allocatable.shape[0])
        for attr in ("allocatable", "requested", "nonzero_requested", "unschedulable", "ready",
                     "has_hard_taints", "prefer_no_schedule"):
            old = getattr(self, attr)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, attr, new)

    def set_node(self, node: core_pb2.Node, pods: dict[str, PodRecord]) -> None:
        """Add or refresh a node's row; `pods` are the pods counted on it."""
        name = node.metadata.name
        row = self.index.get(name)
        if row is None:
            if len(self.names) == self.allocatable.shape[0]:
                self._grow()
            row = len(self.names)
            self.names.append(name)
            self.index[name] = row
            self.infos.append(NodeInfo(name, {}, (), False, UNKNOWN))
            self.requested[row] = 0
            self.nonzero_requested[row] = 0
            for record in pods.values():
                self._count(row, record, 1)
        info = self.infos[row]
        info.pods = pods
        info.labels = dict(node.metadata.labels)
        info.taints = tuple(TaintInfo(t.key, t.value, t.effect) for t in node.spec.taints)
        info.unschedulable = node.spec.unschedulable
        info.ready = node_ready(node)
        self.allocatable[row] = node_allocatable(node)
        self.unschedulable[row] = info.unschedulable
        self.ready[row] = info.ready
        self.has_hard_taints[row] = any(True for _ in info.hard_taints())
        self.prefer_no_schedule[row] = sum(1 for t in info.taints if t.effect == "PreferNoSchedule")
        self.generation += 1

    def remove_node(self, name: str) -> None:
        row = self.index.pop(name, None)
        if row is None:
            return
        last = len(self.names) - 1
        if row != last:
            # Move the last row into the hole so the live rows stay [:len].
            moved = self.names[last]
            self.names[row] = moved
            self.infos[row] = self.infos[last]
            self.index[moved] = row
            for attr in ("allocatable", "requested", "nonzero_requested", "unschedulable", "ready",
                         "has_hard_taints", "prefer_no_schedule"):
                column = getattr(self, attr)
                column[row] = column[last]
        self.names.pop()
        self.infos.pop()
        self.generation += 1

    def add_pod(self, record: PodRecord) -> None:
        if record.anti_affinity:
            self.anti_affinity_pods[record.key] = record
        if record.host_ports:
            self.host_port_pods[record.key] = record
        row = self.index.get(record.node_name)
        if row is not None:
            self._count(row, record, 1)

    def remove_pod(self, record: PodRecord) -> None:
        self.anti_affinity_pods.pop(record.key, None)
        self.host_port_pods.pop(record.key, None)
        row = self.index.get(record.node_name)
        if row is not None:
            self._count(row, record, -1)

    def _count(self, row: int, record: PodRecord, sign: int) -> None:
        self.requested[row] += [sign * v for v in record.requests]
        self.nonzero_requested[row] += [sign * v for v in record.nonzero]

    # ---------------------------------------------------------------- reads (the plugins')

    def domains(self, topology_key: str) -> Vector:
        """Per row, an id for the node's value of `topology_key` (-1: the node lacks the label).

        Rows with the same value share an id, so "pods in this node's zone" is an array lookup.
        """
        if self._domains_generation != self.generation:
            self._domains.clear()
            self._domains_generation = self.generation
        ids = self._domains.get(topology_key)
        if ids is None:
            seen: dict[str, int] = {}
            ids = np.fromiter(
                (seen.setdefault(info.labels[topology_key], len(seen)) if topology_key in info.labels else -1
                 for info in self.infos), dtype=np.int64, count=len(self.infos))
            self._domains[topology_key] = ids
        return ids

    def pods_per_domain(self, topology_key: str, namespaces: frozenset[str], selector: selectors.LabelSelector,
                        eligible: Vector | None = None) -> tuple[Vector, Vector]:
        """(domain id per row, how many counted pods in `namespaces` matching `selector` each domain has).

        With `eligible`, only pods on those rows count. What spreading and anti-affinity both ask.
        """
        ids = self.domains(topology_key)
        counts = np.zeros(int(ids.max(initial=-1)) + 1, dtype=np.int64)
        for row, info in enumerate(self.infos):
            if ids[row] < 0 or (eligible is not None and not eligible[row]):
                continue
            for record in info.pods.values():
                if record.namespace in namespaces and selector.matches(record.labels):
                    counts[ids[row]] += 1
        return ids, counts

    def column(self, attr: str) -> Vector:
        """A column cut to the live rows (a view: no copy)."""
        return getattr(self, attr)[: len(self.names)]


def per_node(ids: Vector, counts: Vector) -> Vector:
    """Each node's count from `pods_per_domain`; 0 for nodes without the topology label."""
    if counts.size == 0:
        return np.zeros(ids.shape, dtype=np.int64)
    return np.where(ids >= 0, counts[np.maximum(ids, 0)], 0)


class NodeMaskCache:
    """Per-node answers that depend only on node details, kept until the table's generation moves.

    Pods of one ReplicaSet share their selectors and tolerations, so a burst of them
    computes the Python loop over nodes once and then reuses the vector.
    """

    def __init__(self, limit: int = 256) -> None:
        self._generation = -1
        self._limit = limit
        self._values: dict[Hashable, object] = {}

    def get(self, nodes: NodeTable, key: Hashable, compute: Callable[[], object]) -> object:
        if nodes.generation != self._generation:
            self._values.clear()
            self._generation = nodes.generation
        value = self._values.get(key)
        if value is None:
            value = compute()
            if len(self._values) >= self._limit:
                self._values.clear()
            self._values[key] = value
        return value
