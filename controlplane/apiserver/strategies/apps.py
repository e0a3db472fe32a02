"""Strategies of apps/v1: ReplicaSet and Deployment (defaults and validation; the rest is generic)."""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import apps as validation
from controlplane.apiserver.validation.field import Errors


class ReplicaSetStrategy(Strategy):
    def default(self, obj: Message) -> None:
        defaults.default_replica_set(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_replica_set(obj, old)  # type: ignore[arg-type]


class DeploymentStrategy(Strategy):
    def default(self, obj: Message) -> None:
        defaults.default_deployment(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_deployment(obj, old)  # type: ignore[arg-type]
