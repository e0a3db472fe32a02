"""Strategy of coordination.k8s.io/v1: Lease, the nodes' heartbeat and leader election's lock."""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import coordination as validation
from controlplane.apiserver.validation.field import Errors


class LeaseStrategy(Strategy):
    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_lease(obj, old)  # type: ignore[arg-type]
