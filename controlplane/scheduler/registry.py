"""The plugin registry: every plugin the scheduler knows, by the name the config uses.

kube-scheduler's `frameworkruntime.Registry`. A plugin is built by calling its
factory with its arguments (the config's pluginConfig args) and the `Handle`;
a new plugin is one module under plugins/ and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.scheduler import framework
from controlplane.scheduler.plugins import (
    balanced_allocation,
    default_binder,
    inter_pod_affinity,
    node_affinity,
    node_name,
    node_ports,
    node_ready,
    node_resources_fit,
    node_selector,
    node_unschedulable,
    pod_topology_spread,
    taint_toleration,
    volume_binding,
)

Factory = Callable[[dict[str, Any], framework.Handle], framework.Plugin]

REGISTRY: dict[str, Factory] = {
    node_unschedulable.NAME: node_unschedulable.NodeUnschedulable,
    node_name.NAME: node_name.NodeName,
    node_ready.NAME: node_ready.NodeReady,
    taint_toleration.NAME: taint_toleration.TaintToleration,
    node_selector.NAME: node_selector.NodeSelector,
    node_affinity.NAME: node_affinity.NodeAffinity,
    node_ports.NAME: node_ports.NodePorts,
    node_resources_fit.NAME: node_resources_fit.NodeResourcesFit,
    pod_topology_spread.NAME: pod_topology_spread.PodTopologySpread,
    inter_pod_affinity.NAME: inter_pod_affinity.InterPodAffinity,
    balanced_allocation.NAME: balanced_allocation.BalancedAllocation,
    # Before DefaultBinder: its bind is PreBind (claims annotated with the node), then passes the pod on.
    volume_binding.NAME: volume_binding.VolumeBinding,
    default_binder.NAME: default_binder.DefaultBinder,
}

# The default profile, in the order the filters run (cheap checks first; a node ruled
# out by several is reported under the first) and with kube-scheduler's score weights.
DEFAULT_PLUGINS: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_WEIGHTS: dict[str, int] = {
    taint_toleration.NAME: 3,
    node_affinity.NAME: 2,
    pod_topology_spread.NAME: 2,
    inter_pod_affinity.NAME: 2,
    node_resources_fit.NAME: 1,
    balanced_allocation.NAME: 1,
}
