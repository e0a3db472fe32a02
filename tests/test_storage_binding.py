"""Claims meet volumes: the PV binder, the local-path provisioner, protection and the scheduler's VolumeBinding.

Given the real apiserver, the storage controllers running in the test and, for
placement, hollow nodes with the real scheduler: a claim binds the smallest
Available volume of its class with its access modes and selector, both sides
say Bound; deleting the claim releases a Retain volume and deletes a Delete one
made by the provisioner; a claim in use is only deleted once its pod is gone;
a pod whose claim is missing, or unbound without a provisioner, stays Pending
with a FailedScheduling event naming why; a pod of a WaitForFirstConsumer
claim is scheduled, the claim gets its node, the provisioner makes a volume
pinned to that node, and a second pod of the claim goes to the same node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from client import Client, InformerFactory
from client.controller import Controller
from client.events import EventRecorder
from controlplane.controllers.localpath import LocalPathProvisioner
from controlplane.controllers.persistentvolume import PersistentVolumeController
from controlplane.controllers.pvprotection import PVCProtectionController, PVProtectionController
from proto import core_pb2, storage_pb2
from proto.errors import NotFound
from proto.wellknown import ANNOTATION_PROVISIONED_BY, ANNOTATION_SELECTED_NODE, LOCAL_PATH_PROVISIONER
from tests.controllers_support import eventually
from tests.test_scheduler_e2e import Cluster
from tests.test_storage_api import force_delete, pv, pvc, storage_class

Provisioner = Callable[[Client, InformerFactory, EventRecorder], Controller]


@contextlib.asynccontextmanager
async def storage_controllers(client: Client, provisioner: Provisioner) -> AsyncIterator[None]:
    """The binder, the protection controllers and one provisioner, running in the test."""
    factory = InformerFactory(client)
    recorder = EventRecorder(client, "persistentvolume-controller")
    loops: list[Controller] = [PersistentVolumeController(client, factory, recorder),
                               provisioner(client, factory, recorder),
                               PVCProtectionController(client, factory), PVProtectionController(client, factory)]
    factory.start()
    recorder.start()
    tasks = [asyncio.create_task(c.run()) for c in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        recorder.stop()
        factory.stop()


@pytest.fixture
async def controllers(client: Client) -> AsyncIterator[None]:
    async with storage_controllers(client, LocalPathProvisioner):
        yield


@pytest.fixture
async def volumes(client: Client) -> AsyncIterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        volume = core_pb2.PersistentVolume()
        volume.metadata.name = name
        await force_delete(client, volume)


async def phase_of(client: Client, cls: type[core_pb2.PersistentVolume] | type[core_pb2.PersistentVolumeClaim],
                   name: str, namespace: str = "") -> str:
    try:
        return (await client.get(cls, name, namespace)).status.phase
    except NotFound:
        return "<gone>"


async def events_of(client: Client, name: str, namespace: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in (await client.list(core_pb2.Event, namespace)).items
            if e.involved_object.name == name]


async def test_a_claim_binds_the_smallest_volume_that_fits(client: Client, namespace: str, controllers: None,
                                                           volumes: list[str]) -> None:
    cls = f"{namespace}-manual"
    offered = {
        "small": pv(f"{namespace}-small", "1Gi", storageClassName=cls),                  # too small
        "rwx": pv(f"{namespace}-rwx", "5Gi", storageClassName=cls, accessModes=["ReadWriteMany"]),  # no RWO
        "other": pv(f"{namespace}-other", "3Gi", storageClassName="elsewhere"),         # another class
        "fit": pv(f"{namespace}-fit", "4Gi", storageClassName=cls),
        "big": pv(f"{namespace}-big", "10Gi", storageClassName=cls),
        "ssd": pv(f"{namespace}-ssd", "8Gi", storageClassName=cls),
    }
    offered["ssd"].metadata.labels["disk"] = "ssd"
    for volume in offered.values():
        await client.create(volume)
        volumes.append(volume.metadata.name)
    await client.create(pvc("data", namespace, "2Gi", storageClassName=cls))
    await client.create(pvc("fast", namespace, "2Gi", storageClassName=cls, selector={"matchLabels": {"disk": "ssd"}}))

    async def bound() -> core_pb2.PersistentVolumeClaim | None:
        claim = await client.get(core_pb2.PersistentVolumeClaim, "data", namespace)
        return claim if claim.status.phase == "Bound" else None

    claim = await eventually(bound, "the claim to be bound")
    assert claim.spec.volume_name == f"{namespace}-fit"
    assert dict(claim.status.capacity) == {"storage": "4Gi"} and list(claim.status.access_modes) == ["ReadWriteOnce"]
    volume = await client.get(core_pb2.PersistentVolume, f"{namespace}-fit")
    assert (volume.status.phase, volume.spec.claim_ref.name, volume.spec.claim_ref.uid) == (
        "Bound", "data", claim.metadata.uid)
    fast = await eventually(lambda: _bound_to(client, "fast", namespace), "the selector claim to be bound")
    assert fast == f"{namespace}-ssd"
    assert await phase_of(client, core_pb2.PersistentVolume, f"{namespace}-small") == "Available"

    # Deleted, the claim releases its Retain volume, which keeps its data and is not bound again.
    await client.delete(core_pb2.PersistentVolumeClaim, "data", namespace)
    await eventually(lambda: _is(client, core_pb2.PersistentVolume, f"{namespace}-fit", "Released"),
                     "the volume to be Released")
    await eventually(lambda: _is(client, core_pb2.PersistentVolumeClaim, "data", "<gone>", namespace),
                     "the unused claim to be deleted past its protection")


async def _bound_to(client: Client, name: str, namespace: str) -> str | None:
    claim = await client.get(core_pb2.PersistentVolumeClaim, name, namespace)
    return claim.spec.volume_name if claim.status.phase == "Bound" else None


async def _is(client: Client, cls: type[core_pb2.PersistentVolume] | type[core_pb2.PersistentVolumeClaim],
              name: str, phase: str, namespace: str = "") -> bool:
    return await phase_of(client, cls, name, namespace) == phase


async def test_pods_wait_for_missing_or_unbound_claims_and_follow_provisioned_ones(
        client: Client, namespace: str, controllers: None, volumes: list[str]) -> None:
    cluster = Cluster(client, namespace)
    await cluster.add_nodes(*(cluster.node(n) for n in ("a", "b", "c")))
    await cluster.start()
    local = f"{namespace}-local"
    try:
        await client.create(storage_class(local, provisioner=LOCAL_PATH_PROVISIONER,
                                          volumeBindingMode="WaitForFirstConsumer"))
        for name, claim_name in (("stuck", "unbound"), ("first", "data")):
            pod = cluster.pod(name)
            pod.spec.volumes.add(name="v").persistent_volume_claim.claim_name = claim_name
            await client.create(pod)
        await client.create(pvc("unbound", namespace, storageClassName=""))  # Immediate, nothing to bind

        async def failed_scheduling(pod: str, message: str) -> bool:
            return ("FailedScheduling", message) in await events_of(client, pod, namespace)

        orphan = cluster.pod("orphan")
        orphan.spec.volumes.add(name="v").persistent_volume_claim.claim_name = "nowhere"
        await client.create(orphan)
        await eventually(lambda: failed_scheduling("orphan", '0/3 nodes are available: persistentvolumeclaim '
                                                             '"nowhere" not found.'), "orphan's FailedScheduling")
        await eventually(lambda: failed_scheduling("stuck", "0/3 nodes are available: pod has unbound immediate "
                                                            "PersistentVolumeClaims."), "stuck's FailedScheduling")
        # The claim of "first" does not exist yet either; created, the pod is scheduled at once.
        await client.create(pvc("data", namespace, storageClassName=local))
        placed = await eventually(lambda: _node_of(client, "first", namespace), "first to be scheduled")
        claim = await eventually(lambda: _bound_claim(client, "data", namespace), "the provisioned claim to bind")
        assert claim.metadata.annotations[ANNOTATION_SELECTED_NODE] == placed
        volume = await client.get(core_pb2.PersistentVolume, claim.spec.volume_name)
        volumes.append(volume.metadata.name)
        assert volume.metadata.annotations[ANNOTATION_PROVISIONED_BY] == LOCAL_PATH_PROVISIONER
        assert volume.spec.persistent_volume_reclaim_policy == "Delete"
        assert volume.spec.local.path.endswith(f"/{volume.metadata.name}")
        term = volume.spec.node_affinity.required.node_selector_terms[0]
        assert (term.match_fields[0].key, list(term.match_fields[0].values)) == ("metadata.name", [placed])
        # Every later pod of the claim goes where its volume is.
        second = cluster.pod("second")
        second.spec.volumes.add(name="v").persistent_volume_claim.claim_name = "data"
        await client.create(second)
        assert await eventually(lambda: _node_of(client, "second", namespace), "second to be scheduled") == placed
        assert await _node_of(client, "orphan", namespace) is None

        # In use, the claim outlives its deletion until its pods are gone; then its volume is deleted (Delete).
        await client.delete(core_pb2.PersistentVolumeClaim, "data", namespace)
        await asyncio.sleep(1)
        held = await client.get(core_pb2.PersistentVolumeClaim, "data", namespace)
        assert held.metadata.HasField("deletion_timestamp")
        for name in ("first", "second"):
            await client.delete(core_pb2.Pod, name, namespace, grace_period_seconds=0)
        await eventually(lambda: _is(client, core_pb2.PersistentVolumeClaim, "data", "<gone>", namespace),
                         "the claim to go with its last pod")
        await eventually(lambda: _is(client, core_pb2.PersistentVolume, volume.metadata.name, "<gone>"),
                         "the provisioned volume to be deleted")
    finally:
        await cluster.stop()
        with contextlib.suppress(NotFound):
            await client.delete(storage_pb2.StorageClass, local)


async def _node_of(client: Client, name: str, namespace: str) -> str | None:
    return (await client.get(core_pb2.Pod, name, namespace)).spec.node_name or None


async def _bound_claim(client: Client, name: str, namespace: str) -> core_pb2.PersistentVolumeClaim | None:
    claim = await client.get(core_pb2.PersistentVolumeClaim, name, namespace)
    return claim if claim.status.phase == "Bound" else None

