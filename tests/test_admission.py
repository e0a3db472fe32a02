"""LimitRange defaults and ResourceQuota limits, enforced when an object is created."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.message import Message

from client import Client
from controlplane.apiserver.admission.chain import Chain
from controlplane.apiserver.admission.resourcequota import ResourceQuota
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.storage import Storage
from proto import core_pb2, kinds, manifest
from proto.errors import Forbidden
from provision.processes import Etcd


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
    with pytest.raises(Forbidden, match=r"failed quota: compute: must specify requests\.cpu for: c; "
                                        r"requests\.memory for: c"):
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


# ---------------------------------------------------------------- every counted kind, in-process
# The apiserver's registry over the session's etcd, with ResourceQuota admission given a lister
# of any stored kind: services, configmaps and the rest are counted from storage as pods are.

@pytest.fixture
async def registry(etcd: Etcd) -> AsyncIterator[tuple[Registry, ResourceQuota]]:
    storage = Storage(etcd.url)
    await storage.connect()
    reg = Registry(storage)

    async def stored_objects(kind: kinds.Kind, namespace: str) -> list[Message]:
        items, _, _, _ = await reg.list(kind, namespace)
        found = []
        for raw in items:
            obj = kind.message()
            obj.ParseFromString(raw)
            found.append(obj)
        return found

    async def update_status(quota: core_pb2.ResourceQuota) -> object:
        return await reg.update(kinds.resolve("resourcequotas"), quota.metadata.namespace, quota,
                                subresource="status")

    plugin = ResourceQuota(reg.stored_pods, update_status, stored_objects)
    reg.admission = Chain([plugin])
    yield reg, plugin


async def add_quota(reg: Registry, plugin: ResourceQuota, namespace: str, name: str, hard: dict[str, Any],
                    **spec: Any) -> None:
    quota = manifest.from_dict({"apiVersion": "v1", "kind": "ResourceQuota",
                                "metadata": {"name": name, "namespace": namespace},
                                "spec": {"hard": hard, **spec}})
    plugin.observe("ADDED", await reg.create(kinds.resolve("resourcequotas"), namespace, quota))


def service(name: str, namespace: str, *, type_: str = "ClusterIP", ports: int = 1) -> Message:
    return manifest.from_dict({"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": name, "namespace": namespace},
                               "spec": {"type": type_, "selector": {"app": name},
                                        "ports": [{"name": f"p{i}", "port": 80 + i} for i in range(ports)]}})


def fresh_namespace() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


async def test_a_service_beyond_the_quota_is_refused_with_kubernetes_message(
        registry: tuple[Registry, ResourceQuota]) -> None:
    reg, plugin = registry
    ns = fresh_namespace()
    services = kinds.resolve("services")
    await add_quota(reg, plugin, ns, "q1", {"services": 2, "services.nodeports": 2})
    await reg.create(services, ns, service("s1", ns))
    await reg.create(services, ns, service("s2", ns))
    with pytest.raises(Forbidden) as refused:
        await reg.create(services, ns, service("s3", ns))
    assert str(refused.value) == ('services "s3" is forbidden: exceeded quota: q1, requested: services=1, '
                                  'used: services=2, limited: services=2')
    quota = await reg.get(kinds.resolve("resourcequotas"), ns, "q1")
    assert dict(quota.status.used) == {"services": "2", "services.nodeports": "0"}  # type: ignore[attr-defined]
    # An update is charged for what it adds: s1 turned NodePort with 3 ports wants 3 node ports.
    s1 = await reg.get(services, ns, "s1")
    s1.spec.type = "NodePort"  # type: ignore[attr-defined]
    s1.spec.ports.add(name="p1", port=81)  # type: ignore[attr-defined]
    s1.spec.ports.add(name="p2", port=82)  # type: ignore[attr-defined]
    with pytest.raises(Forbidden, match=r'services "s1" is forbidden: exceeded quota: q1, '
                                        r"requested: services.nodeports=3, used: services.nodeports=0, "
                                        r"limited: services.nodeports=2$"):
        await reg.update(services, ns, s1)
    assert len((await reg.list(services, ns))[0]) == 2


async def test_concurrent_configmap_creates_never_overshoot(registry: tuple[Registry, ResourceQuota]) -> None:
    reg, plugin = registry
    ns = fresh_namespace()
    await add_quota(reg, plugin, ns, "objects", {"configmaps": 5, "count/secrets": 1})
    configmaps = kinds.resolve("configmaps")

    async def attempt(i: int) -> bool:
        cm = manifest.from_dict({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": f"cm{i}", "namespace": ns}})
        try:
            await reg.create(configmaps, ns, cm)
            return True
        except Forbidden:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert results.count(True) == 5
    assert len((await reg.list(configmaps, ns))[0]) == 5
    secret = manifest.from_dict({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": ns}})
    await reg.create(kinds.resolve("secrets"), ns, secret)
    secret.metadata.name = "b"  # type: ignore[attr-defined]
    with pytest.raises(Forbidden, match=r"requested: count/secrets=1, used: count/secrets=1, limited: count/secrets=1"):
        await reg.create(kinds.resolve("secrets"), ns, secret)


async def test_scoped_quotas_count_only_the_pods_they_match(registry: tuple[Registry, ResourceQuota]) -> None:
    reg, plugin = registry
    ns = fresh_namespace()
    pods = kinds.resolve("pods")
    await add_quota(reg, plugin, ns, "besteffort", {"pods": 1}, scopes=["BestEffort"])
    await add_quota(reg, plugin, ns, "high", {"pods": 1},
                    scopeSelector={"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In",
                                                         "values": ["high"]}]})
    await reg.create(pods, ns, pod("free-1", ns))
    with pytest.raises(Forbidden, match=r'pods "free-2" is forbidden: exceeded quota: besteffort, '
                                        r"requested: pods=1, used: pods=1, limited: pods=1"):
        await reg.create(pods, ns, pod("free-2", ns))
    # Pods with requests are not BestEffort: that quota does not see them (and no quota needs cpu).
    await reg.create(pods, ns, pod("sized-1", ns, requests={"cpu": "100m"}))
    await reg.create(pods, ns, pod("sized-2", ns, requests={"cpu": "100m"}))
    urgent = pod("urgent-1", ns, requests={"cpu": "100m"})
    urgent.spec.priority_class_name = "high"
    await reg.create(pods, ns, urgent)
    urgent.metadata.name = "urgent-2"
    with pytest.raises(Forbidden, match="exceeded quota: high, requested: pods=1, used: pods=1"):
        await reg.create(pods, ns, urgent)


async def test_compute_quota_names_every_container_that_must_state_resources(
        registry: tuple[Registry, ResourceQuota]) -> None:
    reg, plugin = registry
    ns = fresh_namespace()
    await add_quota(reg, plugin, ns, "compute", {"limits.memory": "1Gi", "cpu": "2"})
    two = manifest.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two", "namespace": ns},
                              "spec": {"containers": [{"name": "app", "image": "busybox",
                                                       "resources": {"limits": {"cpu": "1"}}},
                                                      {"name": "side", "image": "busybox"}]}})
    with pytest.raises(Forbidden) as refused:
        await reg.create(kinds.resolve("pods"), ns, two)
    assert str(refused.value) == ('pods "two" is forbidden: failed quota: compute: must specify cpu for: side; '
                                  "limits.memory for: app,side")
