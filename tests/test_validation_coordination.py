"""Validation of coordination.k8s.io/v1: Lease."""

from __future__ import annotations

from typing import Any

from tests.test_validation_support import errors_of


def test_lease_duration_must_be_positive() -> None:
    lease: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                             "metadata": {"name": "node-1"},
                             "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 0}}
    assert errors_of(lease) == [("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0")]
    lease["spec"]["leaseDurationSeconds"] = 40
    assert errors_of(lease) == []
