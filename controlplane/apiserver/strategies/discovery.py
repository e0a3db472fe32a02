"""Strategy of discovery.k8s.io/v1 EndpointSlice (Kubernetes' pkg/registry/discovery/endpointslice/strategy.go).

A slice has no status: the controller (or whoever manages it) rewrites the
whole object. Its generation counts changes of its endpoints, ports and address
type, which the generic registry already does for everything outside
metadata. What is special is v1beta1's `deprecatedTopology`: v1 neither takes
nor shows it, so anything a client sends there is dropped before storage, as
Kubernetes silently ignores it.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver import defaults
from controlplane.apiserver.auth import UserInfo
from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import discovery as validation
from controlplane.apiserver.validation.field import Errors
from proto import discovery_pb2
from proto.kinds import Kind


def drop_deprecated_topology(obj: Message) -> None:
    assert isinstance(obj, discovery_pb2.EndpointSlice)
    for endpoint in obj.endpoints:
        endpoint.deprecated_topology.clear()


class EndpointSliceStrategy(Strategy):
    def prepare_for_create(self, obj: Message, user: UserInfo | None) -> None:
        drop_deprecated_topology(obj)

    def prepare_for_update(self, kind: Kind, new: Message, old: Message) -> None:
        drop_deprecated_topology(new)

    def default(self, obj: Message) -> None:
        defaults.default_endpoint_slice(obj)  # type: ignore[arg-type]

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        return validation.validate_endpoint_slice(obj, old)  # type: ignore[arg-type]
