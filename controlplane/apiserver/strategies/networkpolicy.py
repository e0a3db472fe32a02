"""Strategy of networking.k8s.io/v1 NetworkPolicy (Kubernetes' pkg/registry/networking/networkpolicy).

A policy has no status; its generation counts spec changes, which the generic
registry does for everything outside metadata. What is special is defaulting
(SetDefaults_NetworkPolicy): a port without a protocol means TCP, and a
policy without `policyTypes` gets Ingress always, plus Egress when it has
egress rules — so a policy written only with `egress:` still isolates its pods
for ingress, and a deny-all-egress policy must say `policyTypes: [Egress]`.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.apiserver.strategies.base import Strategy
from controlplane.apiserver.validation import networkpolicy as validation
from controlplane.apiserver.validation.field import Errors
from proto import networking_pb2


def default_network_policy(policy: networking_pb2.NetworkPolicy) -> None:
    spec = policy.spec
    ports = [port for rule in spec.ingress for port in rule.ports]
    ports += [port for rule in spec.egress for port in rule.ports]
    for port in ports:
        if not port.HasField("protocol"):
            port.protocol = "TCP"
    if not spec.policy_types:
        spec.policy_types.append("Ingress")
        if spec.egress:
            spec.policy_types.append("Egress")


class NetworkPolicyStrategy(Strategy):
    def default(self, obj: Message) -> None:
        assert isinstance(obj, networking_pb2.NetworkPolicy)
        default_network_policy(obj)

    def validate_fields(self, obj: Message, old: Message | None) -> Errors:
        assert isinstance(obj, networking_pb2.NetworkPolicy)
        assert old is None or isinstance(old, networking_pb2.NetworkPolicy)
        return validation.validate_network_policy(obj, old)
