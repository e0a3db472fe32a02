"""Reading a Service's EndpointSlices: what the proxy, cluster DNS and the ingress agent share.

A Service's endpoints are the union of every slice labelled
`kubernetes.io/service-name: <service>` in its namespace (whoever manages the
slice: the endpointslice controller, or a user for a Service without a
selector). Consumers index their slice cache by that Service key
(`SERVICE_INDEX`, `service_index`), turn a slice change into the Service key
to sync (`service_key_of`), and read the joined endpoints of one Service port
(`port_endpoints`) as kube-proxy's EndpointSliceCache does: an endpoint is
listed once even if two slices hold it mid-move; an unset `ready` counts as
ready; a Service port matches a slice port by name (the controller copies the
Service port's name and resolves its targetPort per pod).

Which endpoints to use is the consumer's call, with the usual rule in
`usable`: the ready ones, or — when none is ready — those still serving while
they terminate, so a Service scaled to its last terminating pod keeps
answering until that pod stops (kube-proxy's ProxyTerminatingEndpoints).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import Message

from proto import discovery_pb2
from proto.wellknown import LABEL_SERVICE_NAME

SERVICE_INDEX = "endpointslice-service"


def service_key_of(obj: Message) -> str | None:
    """The key ("namespace/name") of the Service a slice belongs to, None if it names none."""
    meta = obj.metadata  # type: ignore[attr-defined]
    name = meta.labels.get(LABEL_SERVICE_NAME)
    return f"{meta.namespace}/{name}" if name else None


def service_index(obj: Message) -> list[str]:
    """The store index SERVICE_INDEX: slices by their Service's key."""
    key = service_key_of(obj)
    return [key] if key else []


@dataclass(frozen=True, order=True)
class SliceEndpoint:
    """One address of one slice endpoint, on one port, with its conditions."""

    ip: str
    port: int
    node_name: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False


def port_endpoints(slices: Iterable[discovery_pb2.EndpointSlice], port_name: str, protocol: str = "TCP",
                   address_type: str = "IPv4") -> list[SliceEndpoint]:
    """Every endpoint of the Service port named `port_name` ("" for an unnamed one), sorted, each once."""
    found: dict[tuple[str, int], SliceEndpoint] = {}
    for eps in slices:
        if eps.address_type != address_type:
            continue
        for port in eps.ports:
            if (port.name if port.HasField("name") else "") != port_name or not port.HasField("port"):
                continue
            if (port.protocol if port.HasField("protocol") else "TCP") != protocol:
                continue
            for endpoint in eps.endpoints:
                if not endpoint.addresses:
                    continue
                cond = endpoint.conditions
                ready = not cond.HasField("ready") or cond.ready
                found.setdefault((endpoint.addresses[0], port.port), SliceEndpoint(
                    ip=endpoint.addresses[0], port=port.port, node_name=endpoint.node_name,
                    ready=ready, serving=cond.serving if cond.HasField("serving") else ready,
                    terminating=cond.HasField("terminating") and cond.terminating))
    return sorted(found.values(), key=lambda e: (_ip_order(e.ip), e.port))


def usable(endpoints: Iterable[SliceEndpoint]) -> list[SliceEndpoint]:
    """The endpoints to send traffic to: the ready ones, else the serving terminating ones."""
    endpoints = list(endpoints)
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]


def addresses(slices: Iterable[discovery_pb2.EndpointSlice], *, ready_only: bool = True) -> list[str]:
    """The distinct IPv4 addresses of every (ready) endpoint in `slices`: a headless Service's A records."""
    found = set()
    for eps in slices:
        if eps.address_type != "IPv4":
            continue
        for endpoint in eps.endpoints:
            cond = endpoint.conditions
            if endpoint.addresses and (not ready_only or not cond.HasField("ready") or cond.ready):
                found.add(endpoint.addresses[0])
    return sorted(found, key=_ip_order)


def _ip_order(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in ip.split("."))
    except ValueError:
        return ()
