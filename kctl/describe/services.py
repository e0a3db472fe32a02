"""Describing a service: type, cluster IPs, and per port its target, node port and endpoints."""

from __future__ import annotations

from controlplane.printers.text import NONE
from kctl.describe.section import Section, metadata, pairs
from proto import core_pb2, kinds


def describe_service(svc: core_pb2.Service, endpoints: core_pb2.Endpoints | None) -> Section:
    s = Section()
    spec = svc.spec
    metadata(s, svc, kinds.resolve("services"))
    s.kv(0, "Selector", ",".join(pairs(spec.selector)) or NONE)
    s.kv(0, "Type", spec.type or "ClusterIP")
    if spec.ip_family_policy:
        s.kv(0, "IP Family Policy", spec.ip_family_policy)
    if spec.ip_families:
        s.kv(0, "IP Families", ",".join(spec.ip_families))
    s.kv(0, "IP", spec.cluster_ip or NONE)
    s.kv(0, "IPs", ",".join(spec.cluster_ips) or spec.cluster_ip or NONE)
    if spec.external_ips:
        s.kv(0, "External IPs", ",".join(spec.external_ips))
    ingress = [i.ip or i.hostname for i in svc.status.load_balancer.ingress]
    if ingress:
        s.kv(0, "LoadBalancer Ingress", ", ".join(ingress))
    for port in spec.ports:
        proto = port.protocol or "TCP"
        s.kv(0, "Port", f"{port.name or '<unset>'}  {port.port}/{proto}")
        s.kv(0, "TargetPort", f"{port.target_port or port.port}/{proto}")
        if port.node_port:
            s.kv(0, "NodePort", f"{port.name or '<unset>'}  {port.node_port}/{proto}")
        s.kv(0, "Endpoints", _service_endpoints(endpoints, port.name))
    s.kv(0, "Session Affinity", spec.session_affinity or "None")
    if spec.external_traffic_policy:
        s.kv(0, "External Traffic Policy", spec.external_traffic_policy)
    return s


def _service_endpoints(ep: core_pb2.Endpoints | None, port_name: str) -> str:
    if ep is None:
        return NONE
    found = []
    for subset in ep.subsets:
        for p in subset.ports:
            if p.name == port_name:
                found += [f"{a.ip}:{p.port}" for a in subset.addresses]
    return ",".join(found) or NONE
