"""NodeResourcesFit: a pod fits a node only if its requests fit what is left; and how full to pack.

Left means allocatable minus the requests of every pod bound to the node or
assumed there (decided, Binding in flight), so two decisions in a row never
promise the same millicores. cpu and memory are checked when the pod requests
them, the pod count always ("Too many pods").

Scoring is the config's choice (`scoringStrategy.type`), over the requests with
kube's defaults for unset ones (100m, 200Mi), per resource weighted:

- LeastAllocated (the default): free fraction after placing the pod; spreads
  pods so every node keeps headroom.
- MostAllocated: used fraction after placing the pod; packs nodes full one
  after another (binpacking), leaving whole nodes empty for big pods or for
  scaling the cluster down.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.scheduler.framework import MAX_NODE_SCORE, CycleState, FilterResult, Handle
from controlplane.scheduler.nodeinfo import CPU, MEMORY, PODS, NodeTable, PodInfo, Vector

NAME = "NodeResourcesFit"
ERR_REASONS = ("Insufficient cpu", "Insufficient memory", "Too many pods")
LEAST_ALLOCATED = "LeastAllocated"
MOST_ALLOCATED = "MostAllocated"
STRATEGIES = (LEAST_ALLOCATED, MOST_ALLOCATED)


class NodeResourcesFit:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        strategy = args.get("scoringStrategy") or {}
        self.strategy = strategy.get("type", LEAST_ALLOCATED)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"{NAME}: scoringStrategy.type must be one of {', '.join(STRATEGIES)}, "
                             f"not {self.strategy!r}")
        weights = {r["name"]: int(r.get("weight", 1)) for r in strategy.get("resources", ())} or \
            {"cpu": 1, "memory": 1}
        unknown = set(weights) - {"cpu", "memory"}
        if unknown:
            raise ValueError(f"{NAME}: scoring supports cpu and memory, not {', '.join(sorted(unknown))}")
        self.weights = np.array([weights.get("cpu", 0), weights.get("memory", 0)], dtype=np.float64)

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        free = nodes.column("allocatable") - nodes.column("requested")
        cpu, memory, count = pod.requests
        unfit = (free[:, PODS] < count).astype(np.int64) << 2
        if cpu > 0:
            unfit |= (free[:, CPU] < cpu).astype(np.int64)
        if memory > 0:
            unfit |= (free[:, MEMORY] < memory).astype(np.int64) << 1
        return FilterResult(unfit, ERR_REASONS)

    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector | None:
        return allocation_score(nodes, pod, self.strategy, self.weights)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: Vector, feasible: Vector) -> Vector:
        return scores  # already in [0, 100]


def allocation_score(nodes: NodeTable, pod: PodInfo, strategy: str, weights: Vector) -> Vector:
    capacity = nodes.column("allocatable")[:, :2].astype(np.float64)
    requested = nodes.column("nonzero_requested") + np.array(pod.nonzero, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.where(capacity > 0, requested / capacity, 1.0)
    used = np.minimum(used, 1.0)
    per_resource = used if strategy == MOST_ALLOCATED else 1.0 - used
    return (per_resource @ weights) * (MAX_NODE_SCORE / weights.sum())
