"""Strategy of policy/v1 PodDisruptionBudget (Kubernetes' pkg/registry/policy/poddisruptionbudget).

A new budget starts with an empty status: how many disruptions it allows is for
the disruption controller to work out from the pods, and until it has (status
observedGeneration behind metadata.generation) the eviction subresource refuses
evictions the budget covers. The spec may change after creation; the status
subresource changes only the status, and is checked on its own terms (counts not
negative, conditions well formed), since the spec it carries is the stored one.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import Strategy, object_meta
from controlplane.apiserver.validation import policy as validation
from controlplane.apiserver.validation.field import Errors
from controlplane.apiserver.validation.meta import validate_object_meta, validate_object_meta_update
from proto.kinds import Kind


class PodDisruptionBudgetStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        obj.ClearField("status")

    def default(self, obj: Message) -> None:
        defaults.default_pod_disruption_budget(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_pod_disruption_budget(obj, old)  # type: ignore[arg-type]

    def validate_status_update(self, kind: Kind, new: Message, old: Message) -> Errors:
        errors = validate_object_meta(kind, object_meta(new), name_rule=self.name_rule)
        errors += validate_object_meta_update(object_meta(new), object_meta(old))
        status: Any = new.status  # type: ignore[attr-defined]
        return errors + validation.validate_pod_disruption_budget_status(status)
