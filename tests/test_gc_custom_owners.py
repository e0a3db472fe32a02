"""The garbage collector and custom owners: what a custom object owns goes when the object goes.

Given the session apiserver (gRPC and its plaintext HTTP listener), a CRD
`widgets.gc.example.com` and the garbage collector running in the test with a
dynamic client on the HTTP API (polling custom-owned dependents every 0.3 s):
a ConfigMap owned by a Widget stays while the Widget exists and is collected
once it is deleted; a ConfigMap whose owner is of a kind the cluster does not
serve is never collected (as Kubernetes, which cannot tell either).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import kubernetes.client as k8s
import pytest

from client import Client, InformerFactory
from client.config import ClientConfig
from client.dynamic import DynamicClient
from controlplane.controllers.garbagecollector import GarbageCollector
from proto import core_pb2
from proto.errors import NotFound
from provision.processes import ApiServer
from tests.controllers_support import eventually

GROUP = "gc.example.com"
WIDGETS: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


@pytest.fixture
async def api(http_url: str) -> AsyncIterator[k8s.ApiClient]:
    with k8s.ApiClient(k8s.Configuration(host=http_url)) as api_client:
        ext = k8s.ApiextensionsV1Api(api_client)
        with contextlib.suppress(k8s.ApiException):
            ext.create_custom_resource_definition(WIDGETS)  # type: ignore[arg-type]  # the client sends dicts as they are
        def established() -> bool:
            status = ext.read_custom_resource_definition(f"widgets.{GROUP}").status
            return status is not None and any(c.type == "Established" and c.status == "True"
                                              for c in status.conditions or [])

        deadline = time.monotonic() + 20
        while not established():
            assert time.monotonic() < deadline, "the CRD never became Established"
            await asyncio.sleep(0.1)
        yield api_client


@pytest.fixture
async def collector(client: Client, http_url: str, apiserver: ApiServer) -> AsyncIterator[GarbageCollector]:
    factory = InformerFactory(client)
    dynamic = DynamicClient(ClientConfig(server=apiserver.address, url=http_url))
    gc = GarbageCollector(client, factory, dynamic=dynamic, custom_owner_period=0.3)
    factory.start()
    task = asyncio.create_task(gc.run())
    yield gc
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    factory.stop()


def owned_config_map(name: str, namespace: str, api_version: str, kind: str, owner: str, uid: str
                     ) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = name, namespace
    cm.metadata.owner_references.add(api_version=api_version, kind=kind, name=owner, uid=uid)
    return cm


async def exists(client: Client, name: str, namespace: str) -> bool:
    try:
        await client.get(core_pb2.ConfigMap, name, namespace)
    except NotFound:
        return False
    return True


async def test_what_a_custom_object_owns_goes_with_it(client: Client, namespace: str, api: k8s.ApiClient,
                                                      collector: GarbageCollector) -> None:
    objects = k8s.CustomObjectsApi(api)
    widget: dict[str, Any] = objects.create_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, "v1", namespace, "widgets",
        {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "size": 3})
    uid = widget["metadata"]["uid"]
    await client.create(owned_config_map("of-w1", namespace, f"{GROUP}/v1", "Widget", "w1", uid))
    await client.create(owned_config_map("of-unserved", namespace, "nowhere.example.com/v1", "Gadget", "g1",
                                         "00000000-0000-0000-0000-000000000001"))
    # While its owner exists the dependent stays, through several of the collector's polls.
    await asyncio.sleep(1.0)
    assert await exists(client, "of-w1", namespace)

    objects.delete_namespaced_custom_object(GROUP, "v1", namespace, "widgets", "w1")

    async def collected() -> bool:
        return not await exists(client, "of-w1", namespace)

    await eventually(collected, "the Widget's ConfigMap collected", timeout=15)
    # An owner of a kind nobody serves is never taken as gone.
    assert await exists(client, "of-unserved", namespace)
