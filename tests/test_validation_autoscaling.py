"""Validation of autoscaling/v2: HorizontalPodAutoscaler bounds, targets and metrics."""

from __future__ import annotations

from typing import Any

from tests.test_validation_support import errors_of


def hpa(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                            "minReplicas": 2, "maxReplicas": 10}
    base.update(spec)
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": base}


def test_hpa_bounds_and_target() -> None:
    assert errors_of(hpa(scaleTargetRef={}, minReplicas=0, maxReplicas=0)) == [
        ("spec.scaleTargetRef.kind", "Required value"),
        ("spec.scaleTargetRef.name", "Required value"),
        ("spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1"),
        ("spec.maxReplicas", "Invalid value: 0: must be greater than 0"),
    ]
    assert errors_of(hpa(minReplicas=5, maxReplicas=3)) == [
        ("spec.maxReplicas", "Invalid value: 3: must be greater than or equal to `minReplicas`")]


def test_hpa_metrics() -> None:
    errors = errors_of(hpa(metrics=[
        {"type": "Resource", "resource": {"name": "cpu",
                                          "target": {"type": "Utilization", "averageUtilization": 0}}},
        {"type": "Resource", "resource": {"target": {"type": "AverageValue", "averageValue": "500m"}}},
        {"type": "Magic"},
        {"type": "Resource", "resource": {"name": "memory",
                                          "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
    ]))
    assert errors == [
        ("spec.metrics[0].resource.target.averageUtilization", "Invalid value: 0: must be greater than 0"),
        ("spec.metrics[1].resource.name", "Required value: must specify a resource name"),
        ("spec.metrics[2].type", 'Unsupported value: "Magic": supported values: "ContainerResource", '
                                 '"External", "Object", "Pods", "Resource"'),
    ]
