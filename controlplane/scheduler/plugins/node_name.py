"""NodeName: a pod that names its node (spec.nodeName) fits only that node.

Pods created with spec.nodeName never reach the scheduler (they are bound
already); the plugin matters when the framework is asked about such a pod, as
preemption and simulations do, and it keeps the framework's answer honest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.scheduler.framework import CycleState, FilterResult, Handle
from controlplane.scheduler.nodeinfo import NodeTable, PodInfo

NAME = "NodeName"
ERR_REASON = "node(s) didn't match the requested node name"


class NodeName:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        if not pod.node_name:
            return FilterResult.fits_all()
        fits = np.zeros(len(nodes), dtype=bool)
        row = nodes.index.get(pod.node_name)
        if row is not None:
            fits[row] = True
        return FilterResult.from_mask(fits, ERR_REASON)
