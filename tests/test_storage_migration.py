"""Objects an older apiserver stored (Flotilla's old field numbers) survive the move to Kubernetes' numbers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from controlplane.apiserver import storagemigration
from controlplane.apiserver.storage import Storage
from proto import apps_pb2, core_pb2, manifest, meta_pb2
from provision.processes import Etcd


@pytest.fixture
async def storage(etcd: Etcd) -> AsyncIterator[Storage]:
    s = Storage(etcd.url)
    await s.connect()
    yield s
    await s.close()


@pytest.fixture
def prefix() -> bytes:
    """A private keyspace per test, beside the session apiserver's /registry/."""
    return f"/migration-{uuid.uuid4().hex[:8]}/registry/".encode()


def legacy_bytes(obj: Message) -> bytes:
    """How an apiserver before the renumbering stored `obj`."""
    old = storagemigration._legacy_class(obj.DESCRIPTOR.full_name)()
    json_format.ParseDict(json_format.MessageToDict(obj), old)
    return bytes(old.SerializeToString(deterministic=True))


POD = manifest.from_dict({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "default", "uid": "u-1", "labels": {"app": "web"},
                 "creationTimestamp": "2024-05-01T10:00:00Z", "finalizers": ["f"]},
    "spec": {"nodeName": "node1", "containers": [{
        "name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
        "resources": {"requests": {"cpu": "100m"}},
        "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}],
        "volumes": [{"name": "data", "emptyDir": {}}]},
    "status": {"phase": "Running", "podIP": "10.0.0.5"},
})
DEPLOYMENT = manifest.from_dict({
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "generation": 3},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
    "status": {"replicas": 3, "readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]},
})
SECRET = core_pb2.Secret(api_version="v1", kind="Secret", data={"token": b"\x00\x01secret"}, type="Opaque")
SECRET.metadata.name, SECRET.metadata.namespace = "s", "default"
NAMESPACE = core_pb2.Namespace(api_version="v1", kind="Namespace")
NAMESPACE.metadata.name = "default"
NAMESPACE.status.phase = "Active"
REPLICASET = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
REPLICASET.metadata.name, REPLICASET.metadata.namespace = "web-abc", "default"
REPLICASET.spec.replicas = 2
REPLICASET.status.conditions.add(type="ReplicaFailure", status="True", reason="FailedCreate")

STORED = {b"pods/default/web-1": POD, b"deployments/default/web": DEPLOYMENT, b"secrets/default/s": SECRET,
          b"namespaces/default": NAMESPACE, b"replicasets/default/web-abc": REPLICASET}


async def test_an_empty_store_only_gets_the_format_marker(storage: Storage, prefix: bytes) -> None:
    assert await storagemigration.migrate(storage, prefix) == 0
    marker = await storage.get(prefix + storagemigration.MARKER)
    assert marker is not None and marker.value == storagemigration.FORMAT


async def test_legacy_objects_read_back_equal_after_migration(storage: Storage, prefix: bytes) -> None:
    for key, obj in STORED.items():
        await storage.create(prefix + key, legacy_bytes(obj))
    await storage.create(prefix + b"ranges/serviceips/10.96.0.1", b"services/default/kubernetes")
    # Before: today's classes misread the old bytes.
    before = await storage.get(prefix + b"pods/default/web-1")
    assert before is not None
    misread = core_pb2.Pod()
    try:
        misread.ParseFromString(before.value)
    except Exception:
        pass
    assert misread != POD

    assert await storagemigration.migrate(storage, prefix) == len(STORED)

    for key, obj in STORED.items():
        stored = await storage.get(prefix + key)
        assert stored is not None
        assert type(obj).FromString(stored.value) == obj, key
    allocation = await storage.get(prefix + b"ranges/serviceips/10.96.0.1")
    assert allocation is not None and allocation.value == b"services/default/kubernetes"


async def test_migration_is_idempotent_even_when_interrupted(storage: Storage, prefix: bytes) -> None:
    for key, obj in STORED.items():
        await storage.create(prefix + key, legacy_bytes(obj))
    assert await storagemigration.migrate(storage, prefix) == len(STORED)
    revision = await storage.revision()
    assert await storagemigration.migrate(storage, prefix) == 0  # the marker short-cuts
    assert await storage.revision() == revision  # and nothing was written

    # A run that died before writing its marker: objects already migrated are recognised.
    marker = await storage.get(prefix + storagemigration.MARKER)
    assert marker is not None
    await storage.delete(prefix + storagemigration.MARKER, marker.revision)
    await storage.create(prefix + b"configmaps/default/late", legacy_bytes(
        core_pb2.ConfigMap(api_version="v1", kind="ConfigMap", metadata=meta_pb2.ObjectMeta(name="late"),
                           data={"a": "b"})))
    assert await storagemigration.migrate(storage, prefix) == 1
    late = await storage.get(prefix + b"configmaps/default/late")
    assert late is not None and core_pb2.ConfigMap.FromString(late.value).data["a"] == "b"
    pod = await storage.get(prefix + b"pods/default/web-1")
    assert pod is not None and core_pb2.Pod.FromString(pod.value) == POD
