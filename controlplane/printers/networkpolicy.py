"""Table columns of networking.k8s.io/v1 NetworkPolicy (Kubernetes' printNetworkPolicy).

A policy shows which of its namespace's pods it selects (`<none>` for the empty
selector, which selects them all), then its age.
"""

from __future__ import annotations

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import age, selector_text
from proto import networking_pb2


def _network_policy_cells(policy: networking_pb2.NetworkPolicy, o: GenerateOptions) -> list[Cell]:
    return [policy.metadata.name, selector_text(policy.spec.pod_selector), age(policy, o.now)]


NETWORK_POLICY = TableConvertor[networking_pb2.NetworkPolicy]((
    NAME,
    TableColumnDefinition("Pod-Selector", description="podSelector selects the pods to which this NetworkPolicy "
                          "object applies. The array of rules is applied to any pods selected by this field. An "
                          "empty selector matches all pods in the policy's namespace."),
    AGE,
), _network_policy_cells)
