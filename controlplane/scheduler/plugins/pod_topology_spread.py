"""PodTopologySpread: keep matching pods evenly spread over topology domains.

A constraint (maxSkew, topologyKey, whenUnsatisfiable, labelSelector) counts the
pods of the pod's namespace matching the selector in each domain — each
distinct value of the node label `topologyKey`, e.g. every node for
kubernetes.io/hostname, every zone for topology.kubernetes.io/zone — over the
nodes the pod could run on (its nodeSelector and required node affinity).
With whenUnsatisfiable DoNotSchedule a node is ruled out when placing the pod
there would make its domain exceed the emptiest domain by more than maxSkew;
with ScheduleAnyway the constraint only scores, fewer matching pods better.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.scheduler.framework import (
    SUCCESS,
    Code,
    CycleState,
    FilterResult,
    Handle,
    Status,
    min_max_normalize,
)
from controlplane.scheduler.nodeinfo import (
    NodeTable,
    PodInfo,
    SpreadConstraint,
    Vector,
    matches_node_selector,
    matches_required_affinity,
    per_node,
)

NAME = "PodTopologySpread"
ERR_REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL_NOT_MATCH = f"{ERR_REASON_CONSTRAINTS_NOT_MATCH} (missing required label)"


def eligible_nodes(pod: PodInfo, nodes: NodeTable) -> Vector:
    """Nodes the pod's own node constraints allow: only their domains count (nodeAffinityPolicy Honor)."""
    return np.fromiter(
        (matches_node_selector(pod, info.labels) and matches_required_affinity(pod, info.name, info.labels)
         for info in nodes.infos), dtype=bool, count=len(nodes))


def domain_counts(pod: PodInfo, nodes: NodeTable, constraint: SpreadConstraint,
                  eligible: Vector) -> tuple[Vector, Vector]:
    """(domain id per node, matching pods per domain id)."""
    return nodes.pods_per_domain(constraint.topology_key, frozenset((pod.namespace,)), constraint.selector,
                                 eligible)


class PodTopologySpread:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        pass

    def pre_filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> Status:
        if not any(c.when_unsatisfiable == "DoNotSchedule" for c in pod.spread):
            return Status(Code.SKIP)
        return SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        hard = [c for c in pod.spread if c.when_unsatisfiable == "DoNotSchedule"]
        if not hard:
            return FilterResult.fits_all()
        eligible = eligible_nodes(pod, nodes)
        unfit = np.zeros(len(nodes), dtype=np.int64)
        for constraint in hard:
            ids, counts = domain_counts(pod, nodes, constraint, eligible)
            has_label = ids >= 0
            unfit |= (~has_label).astype(np.int64) << 1
            present = np.unique(ids[has_label & eligible])
            if present.size == 0:
                continue
            lowest = int(counts[present].min())
            self_match = 1 if constraint.selector.matches(pod.labels) else 0
            skew = np.where(has_label, per_node(ids, counts) + self_match - lowest, 0)
            unfit |= (skew > constraint.max_skew).astype(np.int64)
        return FilterResult(unfit, (ERR_REASON_CONSTRAINTS_NOT_MATCH, ERR_REASON_NODE_LABEL_NOT_MATCH))

    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector | None:
        soft = [c for c in pod.spread if c.when_unsatisfiable == "ScheduleAnyway"]
        if not soft:
            return None
        eligible = eligible_nodes(pod, nodes)
        total = np.zeros(len(nodes), dtype=np.float64)
        for constraint in soft:
            ids, counts = domain_counts(pod, nodes, constraint, eligible)
            total += per_node(ids, counts)
        return total

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: Vector, feasible: Vector) -> Vector:
        # Fewer matching pods in the node's domain is better: the emptiest scores 100.
        return min_max_normalize(scores, feasible, reverse=True)
