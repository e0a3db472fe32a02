"""Describing a NetworkPolicy as kubectl does: which pods it selects, what it lets in and out.

Each direction is either "Not affecting ..." (the policy does not isolate it),
"<none> (Selected pods are isolated ...)" (it isolates and allows nothing), or
its rules: the ports, then the peers, rules separated by dashes — kubectl's
describeNetworkPolicySpec, line for line.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.printers.text import timestamp
from kctl.describe.section import Section, annotation_lines, pairs, rfc1123
from proto import networking_pb2, selectors

_INDENT = "    "


def _selector(selector: object) -> str:
    return str(selectors.from_message(selector)) or "<none>"  # type: ignore[arg-type]


_Rule = networking_pb2.NetworkPolicyIngressRule | networking_pb2.NetworkPolicyEgressRule


def _rules(s: Section, rules: Sequence[_Rule], direction: str, peers_field: str, peer_word: str,
           any_peer: str) -> None:
    if not rules:
        s.header(0, f"{_INDENT}<none> (Selected pods are isolated for {direction} connectivity)")
        return
    for i, rule in enumerate(rules):
        if not rule.ports:
            s.header(0, f"{_INDENT}To Port: <any> (traffic allowed to all ports)")
        for port in rule.ports:
            number = port.port if port.HasField("port") else "<nil>"
            span = f"{number}-{port.end_port}" if port.HasField("end_port") else number
            s.header(0, f"{_INDENT}To Port: {span}/{port.protocol or 'TCP'}")
        peers = list(getattr(rule, peers_field))
        if not peers:
            s.header(0, f"{_INDENT}{peer_word}: <any> ({any_peer})")
        for peer in peers:
            s.header(0, f"{_INDENT}{peer_word}:")
            if peer.HasField("namespace_selector"):
                s.header(0, f"  {_INDENT}NamespaceSelector: {_selector(peer.namespace_selector)}")
            if peer.HasField("pod_selector"):
                s.header(0, f"  {_INDENT}PodSelector: {_selector(peer.pod_selector)}")
            if peer.HasField("ip_block"):
                s.header(0, f"  {_INDENT}IPBlock:")
                s.header(0, f"    {_INDENT}CIDR: {peer.ip_block.cidr}")
                s.header(0, f"    {_INDENT}Except: {', '.join(getattr(peer.ip_block, 'except'))}")
        if i != len(rules) - 1:
            s.header(0, f"{_INDENT}----------")


def describe_network_policy(policy: networking_pb2.NetworkPolicy) -> Section:
    s = Section()
    meta, spec = policy.metadata, policy.spec
    s.kv(0, "Name", meta.name)
    s.kv(0, "Namespace", meta.namespace)
    s.kv(0, "Created on", rfc1123(timestamp(meta, "creation_timestamp")))
    s.many(0, "Labels", pairs(meta.labels))
    s.many(0, "Annotations", annotation_lines(meta.annotations))
    s.header(0, "Spec:")
    selected = _selector(spec.pod_selector)
    if selected == "<none>":
        selected = "<none> (Allowing the specific traffic to all pods in this namespace)"
    s.header(0, f"  PodSelector:     {selected}")
    types = set(spec.policy_types)  # defaulting filled them
    if "Ingress" in types:
        s.header(1, "Allowing ingress traffic:")
        _rules(s, list(spec.ingress), "ingress", "from", "From", "traffic not restricted by source")
    else:
        s.header(1, "Not affecting ingress traffic")
    if "Egress" in types:
        s.header(1, "Allowing egress traffic:")
        _rules(s, list(spec.egress), "egress", "to", "To", "traffic not restricted by destination")
    else:
        s.header(1, "Not affecting egress traffic")
    s.header(1, f"Policy Types: {', '.join(spec.policy_types)}")
    return s
