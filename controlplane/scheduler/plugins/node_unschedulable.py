"""NodeUnschedulable: a cordoned node (spec.unschedulable, `kctl cordon`) takes no new pods.

A pod that tolerates the node.kubernetes.io/unschedulable:NoSchedule taint may
still go there, as in Kubernetes (DaemonSet pods carry that toleration).
"""

from __future__ import annotations

from typing import Any

from controlplane.scheduler.framework import CycleState, FilterResult, Handle
from controlplane.scheduler.nodeinfo import NodeTable, PodInfo, tolerated
from proto.wellknown import TAINT_NODE_UNSCHEDULABLE

NAME = "NodeUnschedulable"
ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"


class NodeUnschedulable:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        cordoned = nodes.column("unschedulable")
        if not cordoned.any() or tolerated(pod.tolerations, TAINT_NODE_UNSCHEDULABLE, "", "NoSchedule"):
            return FilterResult.fits_all()
        return FilterResult.from_mask(~cordoned, ERR_REASON_UNSCHEDULABLE)
