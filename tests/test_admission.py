"""LimitRange defaults and ResourceQuota limits, enforced when a pod is created."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client import Client
from proto import core_pb2, manifest
from proto.errors import Forbidden


def pod(name: str, namespace: str, **resources: dict[str, str]) -> core_pb2.Pod:
    obj = manifest.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                              "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
    assert isinstance(obj, core_pb2.Pod)
    return obj


async def create_policy(client: Client, doc: dict[str, Any], *, probe: core_pb2.Pod) -> None:
    """Create a policy and wait until admission applies it (its cache is fed by a watch).

    The probe pod, created with dry run, must be changed (LimitRange) or refused (quota)
    once the policy is in force.
    """
    await client.create(manifest.from_dict(doc))
    for _ in range(100):
        try:
            seen = await client.create(probe, dry_run=True)
        except Forbidden:
            return
        if seen.spec.containers[0].resources != probe.spec.containers[0].resources:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{doc['kind']} not in force after 2 s")


async def test_limit_range_fills_defaults_and_enforces_max(client: Client, namespace: str) -> None:
    await create_policy(client, {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults", "namespace": namespace},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
                             "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}}]}},
        probe=pod("probe", namespace))
    created = await client.create(pod("plain", namespace))
    res = created.spec.containers[0].resources
    assert dict(res.limits) == {"cpu": "500m", "memory": "128Mi"}
    assert dict(res.requests) == {"cpu": "100m", "memory": "128Mi"}
    with pytest.raises(Forbidden, match="maximum cpu usage per Container is 1, but limit is 2"):
        await client.create(pod("greedy", namespace, limits={"cpu": "2"}))


async def test_resource_quota_refuses_the_pod_that_would_exceed_it(client: Client, namespace: str) -> None:
    await create_policy(client, {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": namespace},
        "spec": {"hard": {"pods": 3, "requests.cpu": "1", "requests.memory": "1Gi"}}},
        probe=pod("probe", namespace))
    await client.create(pod("a", namespace, requests={"cpu": "400m", "memory": "256Mi"}))
    await client.create(pod("b", namespace, requests={"cpu": "400m", "memory": "256Mi"}))
    with pytest.raises(Forbidden, match=r"exceeded quota: compute, requested: requests.cpu=400m, "
                                        r"used: requests.cpu=800m, limited: requests.cpu=1"):
        await client.create(pod("c", namespace, requests={"cpu": "400m", "memory": "256Mi"}))
    with pytest.raises(Forbidden, match="must specify cpu"):
        await client.create(pod("nothing", namespace))
    quota = await client.get(core_pb2.ResourceQuota, "compute", namespace)
    assert quota.status.used["requests.cpu"] == "800m" and quota.status.used["pods"] == "2"
    await client.delete(core_pb2.Pod, "a", namespace)  # unbound: gone at once, its share freed
    await client.create(pod("c", namespace, requests={"cpu": "400m", "memory": "256Mi"}))


async def test_concurrent_creates_never_overshoot_a_quota(client: Client, namespace: str) -> None:
    await create_policy(client, {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "count", "namespace": namespace},
        "spec": {"hard": {"pods": 5, "requests.cpu": "100"}}}, probe=pod("probe", namespace))

    async def attempt(i: int) -> bool:
        try:
            await client.create(pod(f"p{i}", namespace, requests={"cpu": "10m"}))
            return True
        except Forbidden:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert results.count(True) == 5
    assert len((await client.list(core_pb2.Pod, namespace)).items) == 5
