"""InterPodAffinity: place pods near pods they need, and away from pods they must avoid.

A term (labelSelector, namespaces, topologyKey) names a group of pods and a
kind of domain — the node for kubernetes.io/hostname, the zone for
topology.kubernetes.io/zone:

- required **affinity**: the node's domain must already run a pod matching the
  term. The first pod of a group that matches its own term may go anywhere
  (with the label), or a group could never start;
- required **anti-affinity**: the node's domain must run no pod matching the
  term. It is symmetric, as in Kubernetes: a node is also ruled out when a pod
  already in its domain has an anti-affinity term matching the incoming pod;
- preferred terms score: each matching pod in the node's domain adds the
  term's weight (affinity) or subtracts it (anti-affinity).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.scheduler.framework import CycleState, FilterResult, Handle, min_max_normalize
from controlplane.scheduler.nodeinfo import AffinityTerm, NodeTable, PodInfo, Vector, per_node

NAME = "InterPodAffinity"
ERR_REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
ERR_REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASONS = (ERR_REASON_ANTI_AFFINITY, ERR_REASON_EXISTING_ANTI_AFFINITY, ERR_REASON_AFFINITY)


def matching_per_domain(nodes: NodeTable, term: AffinityTerm) -> tuple[Vector, Vector]:
    """(domain id per node, how many pods matching `term` run in each domain)."""
    return nodes.pods_per_domain(term.topology_key, term.namespaces, term.selector)


class InterPodAffinity:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        if not pod.anti_affinity and not pod.affinity and not nodes.anti_affinity_pods:
            return FilterResult.fits_all()
        unfit = np.zeros(len(nodes), dtype=np.int64)
        for term in pod.affinity:
            ids, counts = matching_per_domain(nodes, term)
            if counts.any():
                near = per_node(ids, counts) > 0
            elif pod.namespace in term.namespaces and term.selector.matches(pod.labels):
                near = ids >= 0  # the group's first pod: any domain will do
            else:
                near = np.zeros(len(nodes), dtype=bool)
            unfit |= (~near).astype(np.int64) << 2
        for term in pod.anti_affinity:
            crowded = per_node(*matching_per_domain(nodes, term)) > 0
            unfit |= crowded.astype(np.int64)
        for record in nodes.anti_affinity_pods.values():
            row = nodes.index.get(record.node_name)
            if row is None or record.key == pod.key:
                continue
            for term in record.anti_affinity:
                if pod.namespace in term.namespaces and term.selector.matches(pod.labels):
                    ids = nodes.domains(term.topology_key)
                    if ids[row] >= 0:
                        unfit |= (ids == ids[row]).astype(np.int64) << 1
        return FilterResult(unfit, REASONS)

    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector | None:
        if not pod.preferred_anti_affinity and not pod.preferred_affinity:
            return None
        total = np.zeros(len(nodes), dtype=np.float64)
        for sign, terms in ((-1, pod.preferred_anti_affinity), (1, pod.preferred_affinity)):
            for term in terms:
                total += sign * term.weight * per_node(*matching_per_domain(nodes, term))
        return total

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: Vector, feasible: Vector) -> Vector:
        return min_max_normalize(scores, feasible)
