"""NodeSelector: spec.nodeSelector — every listed label must be on the node with that value.

(kube-scheduler checks nodeSelector inside its NodeAffinity plugin; Flotilla keeps
the two apart so each does one thing, and reports the same reason text.)
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from controlplane.scheduler.framework import CycleState, FilterResult, Handle
from controlplane.scheduler.nodeinfo import NodeMaskCache, NodeTable, PodInfo, Vector, matches_node_selector

NAME = "NodeSelector"
ERR_REASON = "node(s) didn't match Pod's node affinity/selector"


class NodeSelector:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        self._masks = NodeMaskCache()

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        if not pod.node_selector:
            return FilterResult.fits_all()
        wanted = pod.node_selector

        def compute() -> Vector:
            return np.fromiter((matches_node_selector(pod, info.labels) for info in nodes.infos),
                               dtype=bool, count=len(nodes))

        return FilterResult.from_mask(cast(Vector, self._masks.get(nodes, wanted, compute)), ERR_REASON)
