"""Describing a service: type, cluster IPs, and per port its target, node port and endpoints."""

from __future__ import annotations

from client.endpointslices import port_endpoints
from controlplane.printers.text import NONE
from kctl.describe.section import Section, metadata, pairs
from proto import core_pb2, discovery_pb2, kinds


def describe_service(svc: core_pb2.Service, slices: list[discovery_pb2.EndpointSlice]) -> Section:
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
        s.kv(0, "Endpoints", _service_endpoints(slices, port.name, proto))
    s.kv(0, "Session Affinity", spec.session_affinity or "None")
    if spec.external_traffic_policy:
        s.kv(0, "External Traffic Policy", spec.external_traffic_policy)
    return s


def _service_endpoints(slices: list[discovery_pb2.EndpointSlice], port_name: str, protocol: str) -> str:
    ready = [e for e in port_endpoints(slices, port_name, protocol) if e.ready]
    return ",".join(f"{e.ip}:{e.port}" for e in ready) or NONE
