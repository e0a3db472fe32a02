"""Table columns of policy/v1: pod disruption budgets (Kubernetes' printPodDisruptionBudget).

A budget shows the bound it was given (the other is N/A) and how many of its
pods may be evicted right now, as the disruption controller last computed it.
"""

from __future__ import annotations

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import age
from proto import policy_pb2

NOT_SET = "N/A"


def _pod_disruption_budget_cells(pdb: policy_pb2.PodDisruptionBudget, o: GenerateOptions) -> list[Cell]:
    spec = pdb.spec
    return [pdb.metadata.name, spec.min_available or NOT_SET, spec.max_unavailable or NOT_SET,
            pdb.status.disruptions_allowed, age(pdb, o.now)]


POD_DISRUPTION_BUDGET = TableConvertor[policy_pb2.PodDisruptionBudget]((
    NAME,
    TableColumnDefinition("Min Available", description="The minimum number of pods that must be available."),
    TableColumnDefinition("Max Unavailable", description="The maximum number of pods that may be unavailable."),
    TableColumnDefinition("Allowed Disruptions", type="integer",
                          description="Calculated number of pods that may be disrupted at this time."),
    AGE,
), _pod_disruption_budget_cells)
