"""NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory fill at the same pace.

A node at 90% cpu and 10% memory strands its memory: no pod can use it without
cpu. The score is 100 * (1 - the standard deviation of the used fractions after
placing the pod), so it works alongside Least- or MostAllocated, not instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.scheduler.framework import MAX_NODE_SCORE, CycleState, Handle
from controlplane.scheduler.nodeinfo import NodeTable, PodInfo, Vector

NAME = "NodeResourcesBalancedAllocation"


class BalancedAllocation:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        pass

    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector | None:
        capacity = nodes.column("allocatable")[:, :2].astype(np.float64)
        requested = nodes.column("nonzero_requested") + np.array(pod.nonzero, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            used = np.minimum(np.where(capacity > 0, requested / capacity, 1.0), 1.0)
        # With two resources the standard deviation is half their difference.
        deviation = np.abs(used[:, 0] - used[:, 1]) / 2
        return (1.0 - deviation) * MAX_NODE_SCORE

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: Vector, feasible: Vector) -> Vector:
        return scores
