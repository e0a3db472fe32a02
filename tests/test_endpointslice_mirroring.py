"""The mirroring controller: a selector-less Service's Endpoints reach the slice readers.

Given the session apiserver and the controller running in the test: kube-dns
as `cluster up` writes it (a Service without a selector, its Endpoints naming
the DNS servers) gets a mirrored slice the proxy's reader sees; a change of the
Endpoints rewrites the slice in place; Endpoints labelled skip-mirror, and
those of a Service with a selector, are not mirrored; the slice goes when the
Endpoints go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from client import Client, InformerFactory
from client.endpointslices import port_endpoints
from controlplane.controllers.endpointslicemirroring import (
    CONTROLLER_NAME,
    EndpointSliceMirroringController,
    desired_slices,
)
from proto import core_pb2, discovery_pb2, manifest
from proto.wellknown import LABEL_MANAGED_BY, LABEL_SERVICE_NAME
from tests.controllers_support import eventually


def endpoints(name: str, namespace: str, ready: list[str], not_ready: tuple[str, ...] = (), *,
              labels: dict[str, str] | None = None) -> core_pb2.Endpoints:
    return manifest.from_dict({  # type: ignore[return-value]
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "subsets": [{"addresses": [{"ip": ip} for ip in ready],
                     "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}]})


def service(name: str, namespace: str, selector: dict[str, str] | None = None) -> core_pb2.Service:
    return manifest.from_dict({  # type: ignore[return-value]
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector or {}, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                                     {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}})


@pytest.fixture
async def mirroring(client: Client) -> AsyncIterator[None]:
    factory = InformerFactory(client)
    controller = EndpointSliceMirroringController(client, factory)
    factory.start()
    task = asyncio.create_task(controller.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    factory.stop()


async def mirrored(client: Client, namespace: str, name: str) -> list[discovery_pb2.EndpointSlice]:
    found = (await client.list(discovery_pb2.EndpointSlice, namespace,
                               label_selector=f"{LABEL_SERVICE_NAME}={name}")).items
    return [s for s in found if s.metadata.labels.get(LABEL_MANAGED_BY) == CONTROLLER_NAME]


def test_a_subset_becomes_one_slice_per_address_type() -> None:
    ep = endpoints("dns", "x", ["10.0.0.1", "fd00::1"], ("10.0.0.2",))
    slices = desired_slices(ep)
    assert [s.address_type for s in slices] == ["IPv4", "IPv6"]
    assert [(e.addresses[0], e.conditions.ready) for e in slices[0].endpoints] == [("10.0.0.1", True),
                                                                                  ("10.0.0.2", False)]
    assert [(p.name, p.port, p.protocol) for p in slices[0].ports] == [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]


async def test_selectorless_endpoints_are_mirrored_and_followed(client: Client, namespace: str,
                                                                mirroring: None) -> None:
    await client.create(service("kube-dns", namespace))
    await client.create(endpoints("kube-dns", namespace, ["192.168.50.1"]))

    async def one_slice() -> list[discovery_pb2.EndpointSlice] | None:
        found = await mirrored(client, namespace, "kube-dns")
        return found if len(found) == 1 and found[0].endpoints else None

    [eps] = await eventually(one_slice, "the mirrored slice")
    # What the proxy reads: the DNS server behind each port.
    assert [e.ip for e in port_endpoints([eps], "dns", "UDP")] == ["192.168.50.1"]
    assert eps.metadata.owner_references[0].kind == "Endpoints"

    changed = endpoints("kube-dns", namespace, ["192.168.50.1", "192.168.50.2"])
    current = await client.get(core_pb2.Endpoints, "kube-dns", namespace)
    changed.metadata.resource_version = current.metadata.resource_version
    await client.update(changed)

    async def followed() -> bool:
        found = await mirrored(client, namespace, "kube-dns")
        return [(s.metadata.name, [e.addresses[0] for e in s.endpoints]) for s in found] == [
            (eps.metadata.name, ["192.168.50.1", "192.168.50.2"])]

    await eventually(followed, "the same slice rewritten with both servers")
    await client.delete(core_pb2.Endpoints, "kube-dns", namespace)

    async def gone() -> bool:
        return not await mirrored(client, namespace, "kube-dns")

    await eventually(gone, "the mirrored slice removed with its Endpoints")


async def test_skip_mirror_and_selected_services_are_left_alone(client: Client, namespace: str,
                                                                mirroring: None) -> None:
    await client.create(service("own", namespace))
    await client.create(endpoints("own", namespace, ["192.168.50.3"],
                                  labels={"endpointslice.kubernetes.io/skip-mirror": "true"}))
    await client.create(service("selected", namespace, {"app": "x"}))
    await client.create(endpoints("selected", namespace, ["192.168.50.4"]))
    await client.create(service("mirrored", namespace))
    await client.create(endpoints("mirrored", namespace, ["192.168.50.5"]))

    async def the_third_mirrored() -> bool:
        return bool(await mirrored(client, namespace, "mirrored"))

    await eventually(the_third_mirrored, "the plain one mirrored")  # by then the others were seen too
    assert await mirrored(client, namespace, "own") == []
    assert await mirrored(client, namespace, "selected") == []
