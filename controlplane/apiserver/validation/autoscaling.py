"""Validation of autoscaling/v2: HorizontalPodAutoscaler (metrics, targets, scaling behaviour)."""

from __future__ import annotations

from controlplane.apiserver.validation.field import Errors, forbidden, invalid, one_of, required, unsupported
from controlplane.apiserver.validation.podspec import validate_resource_name
from proto import autoscaling_pb2
from proto.quantity import QuantityError, parse_quantity

# ---------------------------------------------------------------- HorizontalPodAutoscaler

_METRIC_SOURCES = {"ContainerResource": "container_resource", "External": "external", "Object": "object",
                   "Pods": "pods", "Resource": "resource"}


def _metric_target(target: autoscaling_pb2.MetricTarget, path: str) -> Errors:
    errors: Errors = []
    if not target.type:
        errors.append(required(f"{path}.type", "must specify a metric target type"))
    elif target.type not in ("Utilization", "Value", "AverageValue"):
        errors.append(invalid(f"{path}.type", target.type,
                              "must be either Utilization, Value, or AverageValue"))
    for field, text in (("value", target.value), ("averageValue", target.average_value)):
        if text:
            try:
                positive = parse_quantity(text) > 0
            except QuantityError as exc:
                errors.append(invalid(f"{path}.{field}", text, str(exc)))
                continue
            if not positive:
                errors.append(invalid(f"{path}.{field}", text, "must be positive"))
    if target.HasField("average_utilization") and target.average_utilization < 1:
        errors.append(invalid(f"{path}.averageUtilization", target.average_utilization,
                              "must be greater than 0"))
    # The target type says which number the controller compares against; it must be there.
    needed = {"Utilization": ("averageUtilization", target.HasField("average_utilization")),
              "Value": ("value", bool(target.value)),
              "AverageValue": ("averageValue", bool(target.average_value))}.get(target.type)
    if needed and not needed[1]:
        errors.append(required(f"{path}.{needed[0]}", f"must be set when `type` is '{target.type}'"))
    return errors


def _metric(metric: autoscaling_pb2.MetricSpec, path: str) -> Errors:
    if not metric.type:
        return [required(f"{path}.type", "must specify a metric source type")]
    field = _METRIC_SOURCES.get(metric.type)
    if field is None:
        return [unsupported(f"{path}.type", metric.type, sorted(_METRIC_SOURCES))]
    json_name = metric.DESCRIPTOR.fields_by_name[field].json_name
    errors = [forbidden(f"{path}.{metric.DESCRIPTOR.fields_by_name[other].json_name}",
                        "must populate the given metric source only")
              for other in _METRIC_SOURCES.values()
              if other != field and metric.HasField(other)]  # type: ignore[arg-type]
    if not metric.HasField(field):  # type: ignore[arg-type]
        return [*errors, required(f"{path}.{json_name}",
                                  "must populate information for the given metric source")]
    p = f"{path}.{json_name}"
    source = getattr(metric, field)
    if isinstance(source, (autoscaling_pb2.ResourceMetricSource,
                           autoscaling_pb2.ContainerResourceMetricSource)):
        if not source.name:
            errors.append(required(f"{p}.name", "must specify a resource name"))
        else:
            errors += validate_resource_name(source.name, f"{p}.name")
        if isinstance(source, autoscaling_pb2.ContainerResourceMetricSource) and not source.container:
            errors.append(required(f"{p}.container", "must specify a container"))
        if source.target.type == "Value":
            # Resource metrics are per pod; a total across pods has no meaning for CPU or memory.
            errors.append(unsupported(f"{p}.target.type", "Value", ("AverageValue", "Utilization")))
    else:
        if not source.metric.name:
            errors.append(required(f"{p}.metric.name", "must specify a metric name"))
        if isinstance(source, autoscaling_pb2.ObjectMetricSource):
            for ref_field in ("kind", "name"):
                if not getattr(source.described_object, ref_field):
                    errors.append(required(f"{p}.describedObject.{ref_field}"))
    return errors + _metric_target(source.target, f"{p}.target")


def _scaling_rules(rules: autoscaling_pb2.HPAScalingRules, path: str) -> Errors:
    errors: Errors = []
    if rules.HasField("stabilization_window_seconds") and not 0 <= rules.stabilization_window_seconds <= 3600:
        errors.append(invalid(f"{path}.stabilizationWindowSeconds", rules.stabilization_window_seconds,
                              "must be less than or equal to 3600"))
    errors += one_of(rules.select_policy, f"{path}.selectPolicy", ("Disabled", "Max", "Min"), optional=True)
    for i, policy in enumerate(rules.policies):
        p = f"{path}.policies[{i}]"
        errors += one_of(policy.type, f"{p}.type", ("Percent", "Pods"))
        if policy.value <= 0:
            errors.append(invalid(f"{p}.value", policy.value, "must be greater than zero"))
        if not 0 < policy.period_seconds <= 1800:
            errors.append(invalid(f"{p}.periodSeconds", policy.period_seconds,
                                  "must be greater than zero and less than or equal to 1800"))
    return errors


def _path_segment(value: str, path: str) -> Errors:
    # kind and name end up in a URL path (/apis/apps/v1/.../deployments/<name>/scale).
    if value in (".", ".."):
        return [invalid(path, value, f"may not be '{value}'")]
    return [invalid(path, value, f"may not contain '{c}'") for c in ("/", "%") if c in value]


def validate_horizontal_pod_autoscaler(hpa: autoscaling_pb2.HorizontalPodAutoscaler,
         old: autoscaling_pb2.HorizontalPodAutoscaler | None) -> Errors:
    spec = hpa.spec
    errors: Errors = []
    for field, value in (("kind", spec.scale_target_ref.kind), ("name", spec.scale_target_ref.name)):
        if not value:
            errors.append(required(f"spec.scaleTargetRef.{field}"))
        else:
            errors += _path_segment(value, f"spec.scaleTargetRef.{field}")
    if spec.HasField("min_replicas") and spec.min_replicas < 1:
        errors.append(invalid("spec.minReplicas", spec.min_replicas, "must be greater than or equal to 1"))
    if spec.max_replicas < 1:
        errors.append(invalid("spec.maxReplicas", spec.max_replicas, "must be greater than 0"))
    elif spec.HasField("min_replicas") and spec.max_replicas < spec.min_replicas:
        errors.append(invalid("spec.maxReplicas", spec.max_replicas,
                              "must be greater than or equal to `minReplicas`"))
    for i, metric in enumerate(spec.metrics):
        errors += _metric(metric, f"spec.metrics[{i}]")
    for field, json_name in (("scale_up", "scaleUp"), ("scale_down", "scaleDown")):
        if spec.behavior.HasField(field):  # type: ignore[arg-type]
            errors += _scaling_rules(getattr(spec.behavior, field), f"spec.behavior.{json_name}")
    return errors
