"""Strategies of apps/v1 kinds with rules of their own: DaemonSet and ControllerRevision.

As Kubernetes' pkg/registry/apps/{daemonset,controllerrevision}/strategy.go: a new
DaemonSet starts with an empty status (it is the controller's to write), and a
status write is checked as status — counts never negative, the collision count
never going back — rather than as a whole new spec. A ControllerRevision has no
status at all; its `data` is a snapshot that may never change (validation), while
its `revision` may, since rolling back makes an old snapshot the newest.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import Strategy, object_meta
from controlplane.apiserver.validation import apps as validation
from controlplane.apiserver.validation.field import Errors
from controlplane.apiserver.validation.meta import validate_object_meta, validate_object_meta_update
from proto import apps_pb2
from proto.kinds import Kind


class DaemonSetStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        obj.ClearField("status")

    def default(self, obj: Message) -> None:
        assert isinstance(obj, apps_pb2.DaemonSet)
        defaults.default_daemon_set(obj)

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        assert isinstance(obj, apps_pb2.DaemonSet) and (old is None or isinstance(old, apps_pb2.DaemonSet))
        return validation.validate_daemon_set(obj, old)

    def validate_status_update(self, kind: Kind, new: Message, old: Message) -> Errors:
        assert isinstance(new, apps_pb2.DaemonSet) and isinstance(old, apps_pb2.DaemonSet)
        errors = validate_object_meta(kind, object_meta(new), name_rule=self.name_rule)
        errors += validate_object_meta_update(object_meta(new), object_meta(old))
        return errors + validation.validate_daemon_set_status(new, old)


CONTROLLER_REVISION = Strategy(validator=validation.validate_controller_revision)
