"""Strategy of autoscaling/v2: HorizontalPodAutoscaler (defaults and validation)."""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import autoscaling as validation
from controlplane.apiserver.validation.field import Errors


class HorizontalPodAutoscalerStrategy(Strategy):
    def default(self, obj: Message) -> None:
        defaults.default_horizontal_pod_autoscaler(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_horizontal_pod_autoscaler(obj, old)  # type: ignore[arg-type]
