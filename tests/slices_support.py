"""EndpointSlices for tests that write a Service's endpoints by hand (no controller running).

Tests describe endpoints the way v1 Endpoints do (subsets of addresses and
ports, which reads well); `slices_from` turns them into the slices the
endpointslice controller would write — one per subset, labelled with the
Service's name, ready addresses ready and not-ready ones not — and
`create_slices` / `replace_slices` write them through the API, as what the
proxy, DNS and the ingress agent read.
"""

from __future__ import annotations

from client import Client
from proto import core_pb2, discovery_pb2
from proto.wellknown import LABEL_SERVICE_NAME


def slices_from(ep: core_pb2.Endpoints) -> list[discovery_pb2.EndpointSlice]:
    out = []
    for i, subset in enumerate(ep.subsets):
        eps = discovery_pb2.EndpointSlice(api_version="discovery.k8s.io/v1", kind="EndpointSlice",
                                          address_type="IPv4")
        eps.metadata.name, eps.metadata.namespace = f"{ep.metadata.name}-{i}", ep.metadata.namespace
        eps.metadata.labels[LABEL_SERVICE_NAME] = ep.metadata.name
        for port in subset.ports:
            eps.ports.add(name=port.name, port=port.port, protocol=port.protocol or "TCP")
        for addresses, ready in ((subset.addresses, True), (subset.not_ready_addresses, False)):
            for address in addresses:
                endpoint = eps.endpoints.add(addresses=[address.ip])
                endpoint.conditions.ready = ready
                if address.node_name:
                    endpoint.node_name = address.node_name
        out.append(eps)
    return out


async def create_slices(client: Client, ep: core_pb2.Endpoints) -> None:
    for eps in slices_from(ep):
        await client.create(eps)


async def replace_slices(client: Client, ep: core_pb2.Endpoints) -> None:
    """Make the Service's slices those of `ep`: update the ones that exist, create or delete the rest."""
    wanted = {eps.metadata.name: eps for eps in slices_from(ep)}
    existing = await client.list(discovery_pb2.EndpointSlice, ep.metadata.namespace,
                                 label_selector=f"{LABEL_SERVICE_NAME}={ep.metadata.name}")
    for current in existing.items:
        new = wanted.pop(current.metadata.name, None)
        if new is None:
            await client.delete(discovery_pb2.EndpointSlice, current.metadata.name, ep.metadata.namespace)
        else:
            new.metadata.resource_version = current.metadata.resource_version
            await client.update(new)
    for eps in wanted.values():
        await client.create(eps)
