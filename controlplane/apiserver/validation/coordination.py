"""Validation of coordination.k8s.io/v1: Lease (node heartbeats, leader election)."""

from __future__ import annotations

from controlplane.apiserver.validation.field import Errors, invalid, nonnegative
from proto import coordination_pb2


def validate_lease(lease: coordination_pb2.Lease, old: coordination_pb2.Lease | None) -> Errors:
    errors: Errors = []
    if lease.spec.HasField("lease_duration_seconds") and lease.spec.lease_duration_seconds <= 0:
        errors.append(invalid("spec.leaseDurationSeconds", lease.spec.lease_duration_seconds,
                              "must be greater than 0"))
    if lease.spec.HasField("lease_transitions"):
        errors += nonnegative(lease.spec.lease_transitions, "spec.leaseTransitions")
    return errors
