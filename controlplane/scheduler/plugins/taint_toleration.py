"""TaintToleration: a node's taints repel pods that do not tolerate them.

NoSchedule and NoExecute taints rule a node out (the event names the first
untolerated one, `node(s) had untolerated taint {key: value}`); each
untolerated PreferNoSchedule taint lowers the node's score, so such nodes are
used only when better ones are full. (Evicting running pods for a NoExecute
taint is the node lifecycle controller's job, not the scheduler's.)
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from controlplane.scheduler.framework import CycleState, FilterResult, Handle, default_normalize
from controlplane.scheduler.nodeinfo import NodeMaskCache, NodeTable, PodInfo, Vector

NAME = "TaintToleration"
ERR_REASON_PREFIX = "node(s) had untolerated taint"
# Reasons are bits of an int64; past this many distinct taints the rest share one reason.
MAX_REASONS = 62


def untolerated_reason(taint_text: str) -> str:
    return f"{ERR_REASON_PREFIX} {taint_text}"


class TaintToleration:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        self._cache = NodeMaskCache()

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        tainted = nodes.column("has_hard_taints")
        if not tainted.any():
            return FilterResult.fits_all()
        return cast(FilterResult, self._cache.get(nodes, ("filter", pod.tolerations),
                                                  lambda: self._filter(pod, nodes, tainted)))

    def _filter(self, pod: PodInfo, nodes: NodeTable, tainted: Vector) -> FilterResult:
        unfit = np.zeros(len(nodes), dtype=np.int64)
        reasons: dict[str, int] = {}
        # Only tainted nodes need a look: usually a handful of control-plane nodes.
        for row in np.flatnonzero(tainted):
            info = nodes.infos[row]
            for taint in info.hard_taints():
                if not any(t.tolerates(taint.key, taint.value, taint.effect) for t in pod.tolerations):
                    reason = untolerated_reason(taint.describe())
                    if reason not in reasons and len(reasons) > MAX_REASONS:
                        reason = f"{ERR_REASON_PREFIX}(s)"
                    bit = reasons.setdefault(reason, len(reasons))
                    unfit[row] = 1 << bit
                    break
        return FilterResult(unfit, list(reasons))

    def score(self, state: CycleState, pod: PodInfo, nodes: NodeTable, feasible: Vector) -> Vector | None:
        prefer = nodes.column("prefer_no_schedule")
        if not prefer.any():
            return None
        if not pod.tolerations:
            return prefer.astype(np.float64)
        return cast(Vector, self._cache.get(nodes, ("score", pod.tolerations),
                                            lambda: self._count_intolerable(pod, nodes, prefer)))

    @staticmethod
    def _count_intolerable(pod: PodInfo, nodes: NodeTable, prefer: Vector) -> Vector:
        counts = np.zeros(len(nodes), dtype=np.float64)
        for row in np.flatnonzero(prefer):
            counts[row] = sum(
                1 for taint in nodes.infos[row].taints if taint.effect == "PreferNoSchedule"
                and not any(t.tolerates(taint.key, taint.value, taint.effect) for t in pod.tolerations))
        return counts

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: Vector, feasible: Vector) -> Vector:
        # Fewer intolerable taints is better.
        return default_normalize(scores, feasible, reverse=True)
