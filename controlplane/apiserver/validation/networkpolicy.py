"""Validation of networking.k8s.io/v1 NetworkPolicy, with Kubernetes' paths and messages.

A policy selects pods of its namespace (a label selector) and lists the
traffic allowed to them (ingress) and from them (egress). Each rule's ports
name a protocol (TCP, UDP or SCTP), a port number or a container port's name,
and, for a number only, an `endPort` at least the port; each peer is either an
`ipBlock` (a CIDR and CIDRs strictly inside it to leave out) or pod and
namespace selectors, never both kinds, never none. `policyTypes` holds at most
Ingress and Egress. As pkg/apis/networking/validation (ValidateNetworkPolicy).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from controlplane.apiserver.validation.field import Errors, forbidden, invalid, required, unsupported
from controlplane.apiserver.validation.meta import is_port_name, is_port_num, validate_label_selector
from proto import networking_pb2

POLICY_TYPES = ("Ingress", "Egress")  # in the order Kubernetes' message lists them
PROTOCOLS = ("TCP", "UDP", "SCTP")
_CIDR_HINT = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as Kubernetes' ParseCIDRSloppy reads it (host bits allowed), or None when it is not one."""
    if "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def validate_ip_block(block: networking_pb2.IPBlock, path: str) -> Errors:
    if not block.cidr:
        return [required(f"{path}.cidr")]
    cidr = parse_cidr(block.cidr)
    if cidr is None:
        return [invalid(f"{path}.cidr", block.cidr, _CIDR_HINT)]
    errors: Errors = []
    for i, text in enumerate(getattr(block, "except")):  # a Python keyword
        p = f"{path}.except[{i}]"
        inner = parse_cidr(text)
        if inner is None:
            errors.append(invalid(p, text, _CIDR_HINT))
        elif (inner.version != cidr.version or inner.network_address not in cidr
              or inner.prefixlen <= cidr.prefixlen):
            errors.append(invalid(p, text, "must be a strict subset of `cidr`"))
    return errors


def validate_peer(peer: networking_pb2.NetworkPolicyPeer, path: str) -> Errors:
    errors: Errors = []
    count = 0
    if peer.HasField("pod_selector"):
        count += 1
        errors += validate_label_selector(peer.pod_selector, f"{path}.podSelector")
    if peer.HasField("namespace_selector"):
        count += 1
        errors += validate_label_selector(peer.namespace_selector, f"{path}.namespaceSelector")
    if peer.HasField("ip_block"):
        count += 1
        errors += validate_ip_block(peer.ip_block, f"{path}.ipBlock")
    if count == 0:
        errors.append(required(path, "must specify a peer"))
    elif count > 1 and peer.HasField("ip_block"):
        errors.append(forbidden(path, "may not specify both ipBlock and another peer"))
    return errors


def validate_port(port: networking_pb2.NetworkPolicyPort, path: str) -> Errors:
    errors: Errors = []
    if port.HasField("protocol") and port.protocol not in PROTOCOLS:
        errors.append(unsupported(f"{path}.protocol", port.protocol, PROTOCOLS))
    if not port.HasField("port"):
        if port.HasField("end_port"):
            errors.append(invalid(f"{path}.endPort", port.end_port,
                                  "may not be specified when `port` is not specified"))
        return errors
    if port.port.lstrip("-").isdigit():
        number = int(port.port)
        errors += [invalid(f"{path}.port", number, msg) for msg in is_port_num(number)]
        if port.HasField("end_port"):
            if port.end_port < number:
                errors.append(invalid(f"{path}.endPort", number, "must be greater than or equal to `port`"))
            errors += [invalid(f"{path}.endPort", port.end_port, msg) for msg in is_port_num(port.end_port)]
    else:
        if port.HasField("end_port"):
            errors.append(invalid(f"{path}.endPort", port.end_port, "may not be specified when `port` is non-numeric"))
        errors += [invalid(f"{path}.port", port.port, msg) for msg in is_port_name(port.port)]
    return errors


def _rule(ports: Iterable[networking_pb2.NetworkPolicyPort], peers: Iterable[networking_pb2.NetworkPolicyPeer],
          path: str, peers_name: str) -> Errors:
    errors: Errors = []
    for i, port in enumerate(ports):
        errors += validate_port(port, f"{path}.ports[{i}]")
    for i, peer in enumerate(peers):
        errors += validate_peer(peer, f"{path}.{peers_name}[{i}]")
    return errors


def validate_network_policy(policy: networking_pb2.NetworkPolicy, old: networking_pb2.NetworkPolicy | None) -> Errors:
    """Everything but metadata (the strategy checks that); updates follow the same rules."""
    spec = policy.spec
    errors = validate_label_selector(spec.pod_selector, "spec.podSelector")
    for i, ingress in enumerate(spec.ingress):
        errors += _rule(ingress.ports, getattr(ingress, "from"), f"spec.ingress[{i}]", "from")
    for i, egress in enumerate(spec.egress):
        errors += _rule(egress.ports, egress.to, f"spec.egress[{i}]", "to")
    if len(spec.policy_types) > len(POLICY_TYPES):
        errors.append(invalid("spec.policyTypes", list(spec.policy_types), "may not specify more than two policyTypes"))
        return errors
    for i, policy_type in enumerate(spec.policy_types):
        if policy_type not in POLICY_TYPES:
            errors.append(unsupported(f"spec.policyTypes[{i}]", policy_type, POLICY_TYPES))
    return errors
