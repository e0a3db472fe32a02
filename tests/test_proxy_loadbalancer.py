"""LoadBalancer addresses: given a pool of three, each LoadBalancer Service gets its own.

Allocation only (status.loadBalancer.ingress); no traffic is sent. The pool is a
test range that is never configured on any interface.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from client import Client
from controlplane.loadbalancer.controller import LoadBalancerController
from controlplane.loadbalancer.pool import PoolError, choose, parse_pool
from proto import core_pb2

POOL = "10.251.7.200-10.251.7.202"


def test_pool_parsing_and_choice() -> None:
    assert parse_pool(POOL) == ["10.251.7.200", "10.251.7.201", "10.251.7.202"]
    assert parse_pool("10.251.7.0/30") == ["10.251.7.1", "10.251.7.2"]
    with pytest.raises(PoolError):
        parse_pool("10.251.7.9-10.251.7.1")
    pool = parse_pool(POOL)
    assert choose(pool, {"10.251.7.200"}) == "10.251.7.201"
    assert choose(pool, set(), "10.251.7.202") == "10.251.7.202"
    assert choose(pool, {"10.251.7.202"}, "10.251.7.202") is None
    assert choose(pool, set(pool)) is None


async def ingress(client: Client, namespace: str, name: str) -> str:
    svc = await client.get(core_pb2.Service, name, namespace)
    return svc.status.load_balancer.ingress[0].ip if svc.status.load_balancer.ingress else ""


async def settle(client: Client, namespace: str, names: list[str], want: int) -> dict[str, str]:
    for _ in range(100):
        got = {name: await ingress(client, namespace, name) for name in names}
        if sum(1 for ip in got.values() if ip) == want:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {want} addresses, got {got}")


async def test_each_load_balancer_gets_its_own_address_and_freed_ones_are_reused(
        client: Client, namespace: str) -> None:
    names = ["a", "b", "c", "d"]
    for name in names:
        svc = core_pb2.Service(api_version="v1", kind="Service")
        svc.metadata.name, svc.metadata.namespace = name, namespace
        svc.spec.type = "LoadBalancer"
        svc.spec.ports.add(port=80, protocol="TCP")  # clusterIP and nodePort: the apiserver allocates them
        await client.create(svc)

    controller = LoadBalancerController(client, parse_pool(POOL), namespace=namespace)
    task = asyncio.create_task(controller.run())
    try:
        got = await settle(client, namespace, names, 3)
        given = [ip for ip in got.values() if ip]
        assert sorted(given) == parse_pool(POOL), "three Services, three distinct addresses"
        waiting = next(name for name, ip in got.items() if not ip)

        freed_by = next(name for name in names if name != waiting)
        await client.delete(core_pb2.Service, freed_by, namespace)
        rest = [name for name in names if name != freed_by]
        got = await settle(client, namespace, rest, 3)
        assert got[waiting] in parse_pool(POOL)
        assert len(set(got.values())) == 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
