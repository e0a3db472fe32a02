"""Table columns of autoscaling/v2 HorizontalPodAutoscalers.

TARGETS puts each metric's current reading over its target (`cpu: 40%/80%`), as
Kubernetes' printHorizontalPodAutoscaler does, `<unknown>` before the first reading.
"""

from __future__ import annotations

from typing import Any

from controlplane.printers.table import AGE, NAME, Cell, GenerateOptions, TableColumnDefinition, TableConvertor
from controlplane.printers.text import NONE, UNKNOWN, age
from proto import autoscaling_pb2


def hpa_targets(hpa: autoscaling_pb2.HorizontalPodAutoscaler) -> str:
    """TARGETS: `cpu: 40%/80%` per metric (current/target), `<unknown>` before the first reading."""
    out = []
    for i, spec in enumerate(hpa.spec.metrics):
        current = hpa.status.current_metrics[i] if i < len(hpa.status.current_metrics) else None
        source = spec.resource if spec.type == "Resource" else (
            spec.container_resource if spec.type == "ContainerResource" else None)
        if source is None:
            out.append("<unknown type>" if spec.type not in ("Pods", "Object", "External") else
                       f"<unknown>/{_metric_target(_target_of(spec))}")
            continue
        have = current.resource.current if current is not None and current.HasField("resource") else None
        target = source.target
        if target.average_value:
            now_value = have.average_value if have is not None and have.average_value else UNKNOWN
            out.append(f"{source.name}: {now_value}/{target.average_value}")
        else:
            now_value = (f"{have.average_utilization}%" if have is not None
                         and have.HasField("average_utilization") else UNKNOWN)
            want = f"{target.average_utilization}%" if target.HasField("average_utilization") else "<auto>"
            out.append(f"{source.name}: {now_value}/{want}")
    if not out:
        return NONE
    if len(out) > 2:
        return ", ".join(out[:2]) + f" + {len(out) - 2} more..."
    return ", ".join(out)


def _target_of(spec: autoscaling_pb2.MetricSpec) -> autoscaling_pb2.MetricTarget:
    source: Any = {"Pods": spec.pods, "Object": spec.object, "External": spec.external}[spec.type]
    return source.target


def _metric_target(target: autoscaling_pb2.MetricTarget) -> str:
    return target.average_value or target.value or (
        f"{target.average_utilization}%" if target.HasField("average_utilization") else UNKNOWN)


def _hpa_cells(hpa: autoscaling_pb2.HorizontalPodAutoscaler, o: GenerateOptions) -> list[Cell]:
    spec = hpa.spec
    return [hpa.metadata.name, f"{spec.scale_target_ref.kind}/{spec.scale_target_ref.name}", hpa_targets(hpa),
            str(spec.min_replicas) if spec.HasField("min_replicas") else "<unset>", spec.max_replicas,
            hpa.status.current_replicas, age(hpa, o.now)]


HORIZONTAL_POD_AUTOSCALER = TableConvertor[autoscaling_pb2.HorizontalPodAutoscaler]((
    NAME,
    TableColumnDefinition("Reference", description="The target resource to scale: kind/name."),
    TableColumnDefinition("Targets", description="Each metric's current value over its target."),
    TableColumnDefinition("MinPods", description="The lower limit for the number of replicas."),
    TableColumnDefinition("MaxPods", type="integer", description="The upper limit for the number of replicas."),
    TableColumnDefinition("Replicas", type="integer", description="Current number of replicas of pods managed "
                          "by this autoscaler."),
    AGE,
), _hpa_cells)
