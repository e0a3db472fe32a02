"""The ingress agent's loop against a real apiserver, with a real haproxy in a node's network namespace.

Given the session's apiserver and the proxy tests' sandbox (a node namespace
with two pod namespaces serving their names over HTTP), and an agent for that
node (haproxy on the node's address, ports 80/443, inside its namespace):
the agent makes the default IngressClass, so an Ingress created without a
class gets it and is served; moving the Service's endpoint
to another pod reaches haproxy through the runtime API with no reload, a new
rule reloads; the agent, the only live one, writes its node's address into the
Ingress's status; an Ingress of another controller's class is not served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

from client import Client
from nodeagent.ingress import agent as ingress_agent
from nodeagent.ingress.agent import IngressAgent
from nodeagent.ingress.config import Settings
from proto import core_pb2, discovery_pb2, networking_pb2
from proto.errors import AlreadyExists, NotFound
from proto.wellknown import DEFAULT_INGRESS_CLASS, INGRESS_CONTROLLER_NAME, LABEL_SERVICE_NAME
from tests.controllers_support import running
from tests.test_ingress_haproxy import needs_haproxy
from tests.test_proxy_netns import NODE_IP, POD_IPS, POD_PORT, Sandbox, sh
from tests.test_proxy_netns import sandbox as sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("curl"),
                                reason="needs root and curl to build network namespaces")


async def eventually(check: object, what: str, timeout: float = 20.0) -> object:
    deadline = asyncio.get_running_loop().time() + timeout
    last: object = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()  # type: ignore[operator]
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def endpoint_slice(namespace: str, service: str, pod_ip: str) -> discovery_pb2.EndpointSlice:
    eps = discovery_pb2.EndpointSlice(api_version="discovery.k8s.io/v1", kind="EndpointSlice", address_type="IPv4")
    eps.metadata.name, eps.metadata.namespace = f"{service}-x", namespace
    eps.metadata.labels[LABEL_SERVICE_NAME] = service
    eps.ports.add(name="http", port=POD_PORT, protocol="TCP")
    eps.endpoints.add(addresses=[pod_ip]).conditions.ready = True
    return eps


async def ensure(client: Client, obj: object) -> None:
    with contextlib.suppress(AlreadyExists):
        await client.create(obj)  # type: ignore[type-var]


@needs_haproxy
async def test_the_agent_serves_defaulted_ingresses_follows_slices_and_writes_status(
        client: Client, namespace: str, tmp_path: Path, sandbox: Sandbox) -> None:
    first, second = sandbox.pods
    node_name = f"ingress-{uuid.uuid4().hex[:6]}"
    node = core_pb2.Node(api_version="v1", kind="Node")
    node.metadata.name = node_name
    node.status.addresses.add(type="InternalIP", address=NODE_IP)
    await client.create(node)
    kube_system = core_pb2.Namespace(api_version="v1", kind="Namespace")
    kube_system.metadata.name = ingress_agent.LEASE_NAMESPACE
    await ensure(client, kube_system)

    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "web", namespace
    svc.spec.ports.add(name="http", port=80, protocol="TCP")
    await client.create(svc)
    await client.create(endpoint_slice(namespace, "web", POD_IPS[0]))

    settings = Settings(tmp_path / "ingress", NODE_IP)
    agent = IngressAgent(client, settings, node_name=node_name, netns=sandbox.node)
    try:
        async with running(agent):
            async def answer(host: str) -> str | None:
                """The body of a 200 to a request from the node to its port 80 with `Host: host`."""
                done = await asyncio.to_thread(sh, "ip", "netns", "exec", sandbox.node, "curl", "-s", "-m", "2",
                                               "-o", "-", "-w", " %{http_code}", "-H", f"Host: {host}",
                                               f"http://{NODE_IP}/", check=False)
                body, _, code = done.stdout.rpartition(" ")
                return body if code == "200" else None

            async def default_class() -> networking_pb2.IngressClass | None:
                try:
                    return await client.get(networking_pb2.IngressClass, DEFAULT_INGRESS_CLASS)
                except NotFound:
                    return None

            made = await eventually(default_class, "the default IngressClass")
            assert isinstance(made, networking_pb2.IngressClass) and made.spec.controller == INGRESS_CONTROLLER_NAME

            ing = networking_pb2.Ingress(api_version="networking.k8s.io/v1", kind="Ingress")
            ing.metadata.name, ing.metadata.namespace = "shop", namespace
            path = ing.spec.rules.add(host="a.example").http.paths.add(path="/", path_type="Prefix")
            path.backend.service.name = "web"
            path.backend.service.port.name = "http"

            async def created() -> networking_pb2.Ingress | None:
                # Admission's class cache follows a watch: the class may be a moment late there.
                name = f"shop-{uuid.uuid4().hex[:4]}"
                ing.metadata.name = name
                got = await client.create(ing)
                if got.spec.ingress_class_name == DEFAULT_INGRESS_CLASS:
                    return got
                await client.delete(networking_pb2.Ingress, name, namespace)
                return None

            shop = await eventually(created, "an Ingress defaulted to the flotilla class")
            assert isinstance(shop, networking_pb2.Ingress)
            assert await eventually(lambda: answer("a.example"), "a.example served") == first
            # A reloaded worker serves before the agent has seen it own the admin socket and counted the
            # reload: count once the agent has recorded the configuration naming a.example as applied.
            async def applied() -> bool:
                return agent.applied is not None and "a.example" in agent.applied.config
            await eventually(applied, "a.example's configuration recorded as applied")
            reloads = agent.reloads

            # The endpoint moves to another pod: a slot change, not a reload.
            current = await client.get(discovery_pb2.EndpointSlice, "web-x", namespace)
            moved = endpoint_slice(namespace, "web", POD_IPS[1])
            moved.metadata.resource_version = current.metadata.resource_version
            await client.update(moved)

            async def second_answers() -> bool:
                return await answer("a.example") == second
            await eventually(second_answers, "the moved endpoint served")
            # Counted once the runtime API's answer is back, which may be after the new slot serves.
            async def slot_changed() -> bool:
                return agent.slot_updates >= 1
            await eventually(slot_changed, "the slot change counted")
            assert agent.reloads == reloads

            # Another controller's class is not ours; a new host of ours is a reload.
            other_class = networking_pb2.IngressClass(api_version="networking.k8s.io/v1", kind="IngressClass")
            other_class.metadata.name = f"other-{uuid.uuid4().hex[:4]}"
            other_class.spec.controller = "example.com/other"
            await client.create(other_class)
            theirs = networking_pb2.Ingress()
            theirs.CopyFrom(ing)
            theirs.metadata.name, theirs.spec.ingress_class_name = "theirs", other_class.metadata.name
            theirs.spec.rules[0].host = "theirs.example"
            await client.create(theirs)
            ours = networking_pb2.Ingress()
            ours.CopyFrom(ing)
            ours.metadata.name = "more"
            ours.spec.rules[0].host = "b.example"
            await client.create(ours)
            # The defaultBackend answers b.example too until the reload: wait for the reload, then the answer.
            async def reloaded() -> bool:
                return agent.reloads > reloads

            await eventually(reloaded, "a reload for b.example")
            assert await eventually(lambda: answer("b.example"), "b.example served") == second
            assert agent.reloads == reloads + 1
            assert await answer("theirs.example") is None  # haproxy's 404

            async def status() -> list[str] | None:
                got = await client.get(networking_pb2.Ingress, shop.metadata.name, namespace)
                found = [p.ip for p in got.status.load_balancer.ingress]
                return found or None
            assert await eventually(status, "the Ingress's status") == [NODE_IP]
            await client.delete(networking_pb2.IngressClass, other_class.metadata.name)
    finally:
        await client.delete(core_pb2.Node, node_name)
        with contextlib.suppress(NotFound):
            await client.delete(networking_pb2.IngressClass, DEFAULT_INGRESS_CLASS)
    assert not settings.state_dir.exists()
