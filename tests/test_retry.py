"""Retry on conflict (client/retry.py) against a real apiserver.

Given two writers that read the same object, when both write, then the
apiserver takes one and answers the other Conflict; the helpers must read
again and re-apply their change, so the object ends with both changes — and a
writer that can never win gives up after its attempts with that Conflict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from client import Client
from client.retry import retry_on_conflict, retry_write, update_fresh
from proto import core_pb2
from proto.errors import Conflict


def make_config_map(name: str, namespace: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = name, namespace
    return cm


def label(key: str) -> Callable[[core_pb2.ConfigMap], None]:
    def change(obj: core_pb2.ConfigMap) -> None:
        obj.metadata.labels[key] = "set"
    return change


async def test_concurrent_writers_all_land_their_changes(client: Client, namespace: str) -> None:
    await client.create(make_config_map("shared", namespace))
    writers = [f"writer-{i}" for i in range(6)]

    # Each writer conflicts only when another wrote in between, and each other writer wins once:
    # as many attempts as writers is always enough.
    await asyncio.gather(*(update_fresh(client, core_pb2.ConfigMap, "shared", namespace, label(w),
                                        attempts=len(writers)) for w in writers))

    stored = await client.get(core_pb2.ConfigMap, "shared", namespace)
    assert set(stored.metadata.labels) == set(writers)


async def test_stale_plan_is_refreshed_and_keeps_the_other_writers_change(client: Client, namespace: str) -> None:
    stale = await client.create(make_config_map("planned", namespace))
    other = await client.get(core_pb2.ConfigMap, "planned", namespace)
    other.metadata.labels["other"] = "set"
    await client.update(other)  # between our read and our write
    planned = core_pb2.ConfigMap()
    planned.CopyFrom(stale)
    planned.metadata.labels["mine"] = "set"
    refreshed = 0

    async def replan(_old: core_pb2.ConfigMap) -> core_pb2.ConfigMap:
        nonlocal refreshed
        refreshed += 1
        fresh = await client.get(core_pb2.ConfigMap, "planned", namespace)
        fresh.metadata.labels["mine"] = "set"
        return fresh

    stored = await retry_write(client.update, planned, refresh=replan)

    assert refreshed == 1, "one conflict, one re-plan"
    assert dict(stored.metadata.labels) == {"other": "set", "mine": "set"}


async def test_last_conflict_propagates_after_the_attempts(client: Client, namespace: str) -> None:
    stale = await client.create(make_config_map("contended", namespace))
    await update_fresh(client, core_pb2.ConfigMap, "contended", namespace, label("other"))  # stale is now stale
    attempts = 0

    async def write_stale() -> core_pb2.ConfigMap:
        nonlocal attempts
        attempts += 1
        return await client.update(stale)  # never read afresh: conflicts every time

    with pytest.raises(Conflict):
        await retry_on_conflict(write_stale, attempts=3, delay=0.001)
    assert attempts == 3


async def test_nothing_to_change_writes_nothing(client: Client, namespace: str) -> None:
    created = await client.create(make_config_map("quiet", namespace))

    assert await update_fresh(client, core_pb2.ConfigMap, "quiet", namespace, lambda _cm: False) is None

    after = await client.get(core_pb2.ConfigMap, "quiet", namespace)
    assert after.metadata.resource_version == created.metadata.resource_version


async def test_status_writes_go_to_the_status_subresource(client: Client, namespace: str) -> None:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = "status", namespace
    pod.spec.containers.add(name="app", image="nginx")
    await client.create(pod)

    def running(p: core_pb2.Pod) -> None:
        p.status.phase = "Running"

    stored = await update_fresh(client, core_pb2.Pod, "status", namespace, running, status=True)

    assert stored is not None and stored.status.phase == "Running"
