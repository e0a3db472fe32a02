"""NodeReady: skip nodes whose Ready condition is False or Unknown.

In Kubernetes the node lifecycle controller turns those conditions into the
node.kubernetes.io/not-ready and node.kubernetes.io/unreachable NoSchedule taints,
and TaintToleration rules the node out. Flotilla reads the condition directly
(a node that stopped heartbeating need not wait for a controller), but reports
and honours it exactly as those taints: the same reason text in events, and a
pod tolerating the taint (a DaemonSet's) may still be placed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.scheduler.framework import CycleState, FilterResult, Handle
from controlplane.scheduler.nodeinfo import NOT_READY, UNKNOWN, NodeTable, PodInfo, tolerated
from proto.wellknown import TAINT_NODE_NOT_READY, TAINT_NODE_UNREACHABLE

NAME = "NodeReady"
ERR_REASON_NOT_READY = f"node(s) had untolerated taint {{{TAINT_NODE_NOT_READY}: }}"
ERR_REASON_UNREACHABLE = f"node(s) had untolerated taint {{{TAINT_NODE_UNREACHABLE}: }}"


class NodeReady:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        ready = nodes.column("ready")
        not_ready = ready == NOT_READY
        unknown = ready == UNKNOWN
        if tolerated(pod.tolerations, TAINT_NODE_NOT_READY, "", "NoSchedule"):
            not_ready[:] = False
        if tolerated(pod.tolerations, TAINT_NODE_UNREACHABLE, "", "NoSchedule"):
            unknown[:] = False
        if not (not_ready.any() or unknown.any()):
            return FilterResult.fits_all()
        unfit = not_ready.astype(np.int64) | (unknown.astype(np.int64) << 1)
        return FilterResult(unfit, (ERR_REASON_NOT_READY, ERR_REASON_UNREACHABLE))
