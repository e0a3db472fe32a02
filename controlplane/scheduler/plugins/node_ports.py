"""NodePorts: a pod asking for a hostPort fits only nodes where that port is still free.

A hostPort is taken on the node's own network, so two pods cannot both have
TCP 8080 on one node (unless they bind different host IPs; 0.0.0.0 takes
every address). Only pods using host ports are checked, against the few
counted pods that use them too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.scheduler.framework import CycleState, FilterResult, Handle
from controlplane.scheduler.nodeinfo import NodeTable, PodInfo

NAME = "NodePorts"
ERR_REASON = "node(s) didn't have free ports for the requested pod ports"


class NodePorts:
    name = NAME

    def __init__(self, args: dict[str, Any], handle: Handle) -> None:
        pass

    def filter(self, state: CycleState, pod: PodInfo, nodes: NodeTable) -> FilterResult:
        if not pod.host_ports or not nodes.host_port_pods:
            return FilterResult.fits_all()
        fits = np.ones(len(nodes), dtype=bool)
        for record in nodes.host_port_pods.values():
            row = nodes.index.get(record.node_name)
            if row is not None and record.key != pod.key and any(
                    mine.conflicts(theirs) for mine in pod.host_ports for theirs in record.host_ports):
                fits[row] = False
        return FilterResult.from_mask(fits, ERR_REASON)
