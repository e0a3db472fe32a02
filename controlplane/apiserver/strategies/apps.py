"""Strategies of apps/v1 kinds with rules of their own: DaemonSet, StatefulSet and ControllerRevision.

As Kubernetes' pkg/registry/apps/{daemonset,statefulset,controllerrevision}/strategy.go:
a new DaemonSet or StatefulSet starts with an empty status (it is the controller's
to write), and a status write is checked as status — counts never negative, the
collision count never going back — rather than as a whole new spec. A
ControllerRevision has no status at all; its `data` is a snapshot that may never
change (validation), while its `revision` may, since rolling back makes an old
snapshot the newest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import Strategy, object_meta
from controlplane.apiserver.validation import apps as validation
from controlplane.apiserver.validation.field import Errors
from controlplane.apiserver.validation.meta import validate_object_meta, validate_object_meta_update
from proto.kinds import Kind


class ControllerStrategy(Strategy):
    """A workload written by its controller's status: DaemonSet and StatefulSet."""

    def __init__(self, *, defaulter: Callable[[Any], None], validator: Callable[[Any, Any], Errors],
                 status_validator: Callable[[Any, Any], Errors]) -> None:
        super().__init__(defaulter=defaulter, validator=validator)
        self._status_validator = status_validator

    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        obj.ClearField("status")

    def validate_status_update(self, kind: Kind, new: Message, old: Message) -> Errors:
        errors = validate_object_meta(kind, object_meta(new), name_rule=self.name_rule)
        errors += validate_object_meta_update(object_meta(new), object_meta(old))
        return errors + self._status_validator(new, old)


DAEMON_SET = ControllerStrategy(defaulter=defaults.default_daemon_set, validator=validation.validate_daemon_set,
                                status_validator=validation.validate_daemon_set_status)
STATEFUL_SET = ControllerStrategy(defaulter=defaults.default_stateful_set,
                                  validator=validation.validate_stateful_set,
                                  status_validator=validation.validate_stateful_set_status)
CONTROLLER_REVISION = Strategy(validator=validation.validate_controller_revision)
