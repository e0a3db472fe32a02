"""NodeAffinity: required terms rule nodes out, preferred terms score them.

requiredDuringSchedulingIgnoredDuringExecution is a list of NodeSelectorTerms
(ORed; the requirements inside one term are ANDed; operators In, NotIn, Exists,
DoesNotExist, Gt, Lt over labels, In/NotIn over metadata.name in matchFields).
Each preferred term whose requirements a node meets adds its weight to that
node's score, normalised so the best node scores 100.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from controlplane.scheduler.framework import CycleState, FilterResult, Handle, default_normalize
from controlplane.scheduler.nodeinfo import (
    NodeMaskCache,
    NodeTable,
    PodInfo,
    Vector,
    matches_required_affinity,
    node_term_matches,
)

NAME = "NodeAffinity"
ERR_REASON = "node(s) didn't match Pod's node affinity/selector"


class NodeAffinity:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        self._cache = NodeMaskCache()

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        terms = pod.required_terms
        if terms is None:
            return FilterResult.fits_all()

        def compute() -> Vector:
            return np.fromiter((matches_required_affinity(pod, info.name, info.labels) for info in nodes.infos),
                               dtype=bool, count=len(nodes))

        fits = cast(Vector, self._cache.get(nodes, ("required", terms), compute))
        return FilterResult.from_mask(fits, ERR_REASON)

    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector | None:
        preferred = pod.preferred_terms
        if not preferred:
            return None

        def compute() -> Vector:
            return np.fromiter(
                (sum(w for w, t in preferred if node_term_matches(t, info.name, info.labels))
                 for info in nodes.infos), dtype=np.float64, count=len(nodes))

        return cast(Vector, self._cache.get(nodes, ("preferred", preferred), compute))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: Vector, feasible: Vector) -> Vector:
        return default_normalize(scores, feasible)
